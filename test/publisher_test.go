package test

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
)

// TestSameRequestIDInTwoWorkflowsRunsBoth: request ids are per workflow, so the
// stream's duplicate window does not drop the second.
func TestSameRequestIDInTwoWorkflowsRunsBoth(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(quickWorkflow)
	h.deploy(twoStepWorkflow)
	a := h.submit(&contract.Request{WorkflowID: "quick", RequestID: "shared-id"})
	b := h.submit(&contract.Request{WorkflowID: "two-step", RequestID: "shared-id", Inputs: map[string]any{"n": 1}})
	for wf, id := range map[string]string{"quick": a, "two-step": b} {
		if st := h.waitStatus(wf, id, 10*time.Second); st.Status != contract.StatusCompleted {
			t.Errorf("%s: %s", wf, st.Status)
		}
	}
}

// TestPublisherExitCodes runs the publisher binary into a republished request id,
// Ctrl-C, an unreachable server, refused credentials and a refused permission.
func TestPublisherExitCodes(t *testing.T) {
	workerBin, publisherBin := binaries(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	w := start(t, workerBin, "--listen", strings.TrimPrefix(url, "nats://"), "--data-dir", t.TempDir(), "--log-format", "json")
	natstest.WaitFor(t, 20*time.Second, func() error {
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
	run := []string{"run", "price-check", "--file", "../examples/workflows/price-check.request.json", "--request-id", "dup-1", "--wait"}
	if code, out := publisher(run...); code != 0 {
		t.Fatalf("run --wait: exit %d\n%s", code, out)
	}
	// Republished: the PubAck says duplicate, and run --wait says so at once
	// instead of waiting for events that will never come.
	code, out := publisher(run...)
	if code != 5 || !strings.Contains(out, "already published") || !strings.Contains(out, "its execution is completed") {
		t.Errorf("a republished request id: exit %d, want 5 with the execution's status\n%s", code, out)
	}

	events := start(t, publisherBin, "--nats-url", url, "events", "--replay")
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(events.out.String(), "execution_completed") {
			return errors.New("events not replayed yet")
		}
		return nil
	})
	events.signal(t, syscall.SIGINT)
	if code := events.wait(t, 30*time.Second); code != 130 || !strings.Contains(events.out.String(), "publisher: interrupted") {
		t.Errorf("Ctrl-C: exit %d, want 130 with a message\n%s", code, events.out.String())
	}

	if code, out := run1(t, publisherBin, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), "status", "x"); code != 6 || !strings.Contains(out, "no server answered") {
		t.Errorf("an unreachable server: exit %d, want 6\n%s", code, out)
	}
	srv := natstest.StartWith(t, &server.Options{Users: []*server.User{{
		Username: "bot", Password: "pw",
		Permissions: &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{"flow.exec.>", "_INBOX.>", "$JS.API.>"}}},
	}}})
	if code, out := run1(t, publisherBin, "--nats-url", srv.URL(), "--nats-user", "bot", "--nats-password", "nope", "status", "x"); code != 7 {
		t.Errorf("refused credentials: exit %d, want 7\n%s", code, out)
	}
	if code, out := run1(t, publisherBin, "--nats-url", srv.URL(), "--nats-user", "bot", "--nats-password", "pw", "halt", "--reason", "test"); code != 7 || !strings.Contains(out, "may not do that") {
		t.Errorf("a refused permission: exit %d, want 7\n%s", code, out)
	}
}

// run1 runs a binary to its end and returns its exit code and output.
func run1(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	p := start(t, bin, args...)
	return p.wait(t, 30*time.Second), p.out.String()
}

// TestPublisherHaltConfirmsEveryWorker: halt, pause and resume wait until each
// running worker has the scope's new state in force and name it; with no worker
// running they say so and succeed, since the command is stored.
func TestPublisherHaltConfirmsEveryWorker(t *testing.T) {
	_, publisherBin := binaries(t)
	h := newHarness(t)
	stop1 := h.startWorker("w1", nil)
	stop2 := h.startWorker("w2", nil)
	publisher := func(args ...string) (int, string) {
		return run1(t, publisherBin, append([]string{"--nats-url", h.srv.URL()}, args...)...)
	}

	code, out := publisher("halt", "--scope", "bot.cf", "--reason", "confirm test")
	if code != 0 || !strings.Contains(out, "halted in force on worker w1 (applied ") || !strings.Contains(out, "halted in force on worker w2 (applied ") {
		t.Errorf("halt: exit %d, want 0 naming both workers\n%s", code, out)
	}
	for id, st := range h.workerStates("bot.cf") {
		if st.State != "halted" {
			t.Errorf("worker %s reports bot.cf %s after the publisher confirmed the halt", id, st.State)
		}
	}
	// A pause during a halt is ignored: the halt stays in force, and is confirmed.
	if code, out := publisher("pause", "--scope", "bot.cf", "--reason", "confirm test"); code != 0 || strings.Count(out, "halted in force on worker") != 2 {
		t.Errorf("pause during a halt: exit %d, want 0 with the halt in force on both workers\n%s", code, out)
	}
	if code, out := publisher("resume", "--scope", "bot.cf", "--reason", "confirm test", "--confirm", "0"); code != 0 || strings.Contains(out, "in force") {
		t.Errorf("resume --confirm 0: exit %d, want 0 without waiting\n%s", code, out)
	}

	stop1()
	stop2()
	if code, out := publisher("halt", "--scope", "bot.cf", "--reason", "no worker"); code != 0 || !strings.Contains(out, "no worker answered") {
		t.Errorf("halt with no worker running: exit %d, want 0 saying no worker answered\n%s", code, out)
	}
}
