package test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/worker"
)

// TestWorkerWaitsForItsServer starts the worker before its NATS server, as compose,
// systemd or Kubernetes may: it waits, says so, and runs requests once the server
// is up.
func TestWorkerWaitsForItsServer(t *testing.T) {
	workerBin, publisherBin := binaries(t)
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	started := time.Now()
	w := start(t, workerBin, "--nats-url", url, "--log-format", "json")
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(w.out.String(), "waiting for the NATS server") {
			return errors.New("the worker has not said that it waits")
		}
		if time.Since(started) < 2*time.Second {
			return errors.New("the server starts 2 s after the worker")
		}
		return nil
	})
	select {
	case <-w.done:
		t.Fatalf("the worker exited instead of waiting:\n%s", w.out.String())
	default:
	}
	natstest.StartWith(t, &server.Options{Port: port})
	natstest.WaitFor(t, 30*time.Second, func() error {
		if !strings.Contains(w.out.String(), "consumer bound") {
			return errors.New("worker not consuming yet")
		}
		return nil
	})
	publisher := func(args ...string) (int, string) {
		p := start(t, publisherBin, append([]string{"--nats-url", url}, args...)...)
		return p.wait(t, 30*time.Second), p.out.String()
	}
	if code, out := publisher("deploy", "../examples/workflows/price-check.json"); code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	if code, out := publisher("run", "price-check", "--file", "../examples/workflows/price-check.request.json", "--wait"); code != 0 {
		t.Fatalf("run --wait: exit %d\n%s", code, out)
	}
}

// TestWorkerConnectTimeout: with --connect-timeout, a worker that finds no server
// exits with an error saying what to do.
func TestWorkerConnectTimeout(t *testing.T) {
	workerBin, _ := binaries(t)
	w := start(t, workerBin, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), "--connect-timeout", "1s", "--log-format", "json")
	if code := w.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, w.out.String())
	}
	if out := w.out.String(); !strings.Contains(out, "no ready NATS server within the connect timeout") || !strings.Contains(out, "--connect-timeout") {
		t.Errorf("the error does not say what happened and what to do:\n%s", out)
	}
}

// TestRedeliveryBackoffOnAFreshStart: the documented --redelivery-backoff starts a
// fresh deployment, and a second worker with another max deliver is told so.
func TestRedeliveryBackoffOnAFreshStart(t *testing.T) {
	h := newHarness(t)
	backoff := []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute}
	h.startWorker("w1", func(c *worker.Config) { c.Consumer.BackOff, c.Consumer.MaxDeliver = backoff, 5 })
	h.startWorker("w2", func(c *worker.Config) { c.Consumer.BackOff, c.Consumer.MaxDeliver = backoff, 5 })
	h.deploy(quickWorkflow)
	id := h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("status %s", st.Status)
	}

	cfg := worker.Config{WorkerID: "w3"}
	cfg.NATS.URL = h.srv.URL()
	cfg.Consumer = consumer.Config{BackOff: backoff, MaxDeliver: 3}
	w, err := worker.New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if !errors.Is(err, consumer.ErrConflict) || !strings.Contains(err.Error(), "max deliver (--max-deliver) is 5, this worker's is 3") {
		t.Fatalf("a worker with another max deliver: %v", err)
	}
}

// TestWorkerCheck: --check reports a deployment that fits, a consumer whose
// settings differ and a right the worker's user lacks, changing nothing.
func TestWorkerCheck(t *testing.T) {
	h := newHarness(t)
	check := func(t *testing.T, url string, mutate func(*worker.Config)) (string, error) {
		cfg := worker.Config{WorkerID: "checker"}
		cfg.NATS.URL = url
		if mutate != nil {
			mutate(&cfg)
		}
		w, err := worker.New(cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		err = w.Check(h.ctx, &out)
		return out.String(), err
	}
	if out, err := check(t, h.srv.URL(), nil); err != nil || !strings.Contains(out, "a worker creates it when it starts") {
		t.Fatalf("a fresh server: %v\n%s", err, out)
	}
	if _, err := h.js.Stream(h.ctx, contract.StreamExec); err == nil {
		t.Fatal("--check created a stream")
	}
	h.startWorker("w1", nil)
	if out, err := check(t, h.srv.URL(), nil); err != nil || !strings.Contains(out, "all checks passed") {
		t.Fatalf("a running deployment: %v\n%s", err, out)
	}
	for _, name := range []string{contract.StreamEmergency, contract.StreamEvents, contract.StreamOrders, contract.StreamDLQ} {
		if st, err := h.js.Stream(h.ctx, name); err != nil || st.CachedInfo().State.Msgs != 0 {
			t.Errorf("--check stored a message in %s (%v)", name, err)
		}
	}
	if _, err := h.stateKV().Get(h.ctx, "check"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("--check wrote to %s: %v", contract.BucketState, err)
	}
	out, err := check(t, h.srv.URL(), func(c *worker.Config) { c.Consumer.MaxDeliver = 3 })
	if !errors.Is(err, worker.ErrCheckFailed) || !strings.Contains(out, "FAIL  consumer flowguard-workers") || !strings.Contains(out, "max deliver (--max-deliver) is 5, this worker's is 3") {
		t.Errorf("another max deliver: %v\n%s", err, out)
	}

	limited := natstest.StartWith(t, &server.Options{Users: []*server.User{{
		Username: "worker", Password: "pw",
		Permissions: &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{"flow.emergency.>"}}},
	}}})
	out, err = check(t, limited.URL(), func(c *worker.Config) { c.NATS.User, c.NATS.Password = "worker", "pw" })
	if !errors.Is(err, worker.ErrCheckFailed) || !strings.Contains(out, "FAIL  publish to flow.emergency.auto.global") || strings.Count(out, "FAIL") != 1 {
		t.Errorf("a user without a right: %v\n%s", err, out)
	}

	// The worker role that deploy/nats/auth.conf ships has every right --check tries.
	roles := rolesServer(t)
	asRole := asWorker(roles.URL()) // the same settings as the running worker's
	rh := harnessOn(t, connectAs(t, roles.URL(), "operator"))
	rh.srv = roles
	rh.startWorker("w1", asWorker(roles.URL()))
	if out, err := check(t, "", asRole); err != nil || !strings.Contains(out, "all checks passed") {
		t.Errorf("the shipped worker role: %v\n%s", err, out)
	}
}
