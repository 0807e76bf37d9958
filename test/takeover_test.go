package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
)

// staleWorkflow asks a quote of a provider, then orders at the quoted price: the
// price tells which call, and so which owner, produced a stored output.
const staleWorkflow = `{"id": "stale", "timeout": "5m", "nodes": [
  {"id": "quote", "type": "http", "provider": "exchange", "timeout": "2m", "config": {"url": %q, "outputs": {"price": "body.price"}}},
  {"id": "buy", "type": "order", "depends_on": ["quote"], "config": {"symbol": "'BTCUSDT'", "side": "'buy'",
    "quantity": "0.001", "order_type": "limit", "limit_price": "nodes.quote.price"}}
]}`

// Issue 11, "a stale owner": a worker paused (SIGSTOP) in the middle of an execution
// loses it to another worker, which completes it. When the paused worker wakes up
// (SIGCONT) and finishes its now stale work, nothing it writes may be taken for the
// execution's state: status, result and checkpoints stay the new owner's, there is
// one terminal event and one order intent. Fails on the core before issue 11: the
// stale owner overwrites the result and checkpoints and publishes its own events.
func TestStaleOwnerWritesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	// The first call, from the owner about to be paused, answers price 1 once
	// released; every later call, from the new owner, answers price 2 at once.
	const stalePrice, ownerPrice = 1.0, 2.0
	release := make(chan struct{})
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		price := ownerPrice
		if calls.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			price = stalePrice
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"price": %g}`, price)
	}))
	defer api.Close()
	var once sync.Once
	releaseFirst := func() { once.Do(func() { close(release) }) }
	defer releaseFirst()

	h := newHarness(t)
	f := newFleet(t, h.srv.URL(), "--egress-allow", "127.0.0.1") // the provider is on loopback
	metrics := map[string]string{}
	for _, n := range []string{"w1", "w2", "w3"} {
		metrics[n] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		f.start(n, "--http-addr", metrics[n])
	}
	h.deploy(fmt.Sprintf(staleWorkflow, api.URL))
	id := h.submit(&contract.Request{WorkflowID: "stale", BotID: "b1", RequestID: "s1"})

	// The owner is inside the quote node: pause it there.
	var stale string
	natstest.WaitFor(t, 30*time.Second, func() error {
		st, err := h.client.Status(h.ctx, "stale", id)
		if err != nil || calls.Load() == 0 || st.Status != contract.StatusRunning {
			return fmt.Errorf("the quote node is not running yet (status %+v, %v)", st, err)
		}
		stale = st.WorkerID
		return nil
	})
	f.mu.Lock()
	staleProc := f.procs[stale]
	f.mu.Unlock()
	staleProc.signal(t, syscall.SIGSTOP)
	t.Logf("paused %s inside the quote node", stale)

	st := h.waitStatus("stale", id, time.Minute)
	if st.Status != contract.StatusCompleted || st.WorkerID == stale {
		t.Fatalf("while %s was paused: status %s on %s %+v, want completed by another worker", stale, st.Status, st.WorkerID, st.Error)
	}
	owner := st.WorkerID

	// Wake the stale owner with its answer waiting, and let it finish what it does.
	releaseFirst()
	staleProc.signal(t, syscall.SIGCONT)
	natstest.WaitFor(t, time.Minute, func() error {
		n, err := inFlight(metrics[stale])
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%s still runs %g executions", stale, n)
		}
		return nil
	})

	if st, err := h.client.Status(h.ctx, "stale", id); err != nil || st.Status != contract.StatusCompleted || st.WorkerID != owner {
		t.Errorf("status after the stale owner woke: %+v %v, want completed by %s", st, err, owner)
	}
	var res contract.Result
	h.getJSON(contract.ResultKey("stale", id), &res)
	if p := res.Outputs["quote"]["price"]; p != ownerPrice {
		t.Errorf("result price %v, want the new owner's %v: %+v", p, ownerPrice, res)
	}
	for _, node := range []string{"quote", "buy"} {
		var cp contract.Checkpoint
		h.getJSON(contract.CheckpointKey("stale", id, node), &cp)
		if p := priceOf(node, cp.Outputs); cp.State != contract.NodeStateCompleted || p != ownerPrice {
			t.Errorf("checkpoint of %s: %s with price %v, want completed with the new owner's %v", node, cp.State, p, ownerPrice)
		}
	}
	terminal := 0
	for _, ev := range h.events("stale", id) {
		if contract.IsTerminalEvent(ev.Type) {
			terminal++
		}
		if ev.NodeID != "" && ev.Outputs != nil {
			if p := priceOf(ev.NodeID, ev.Outputs); p != ownerPrice {
				t.Errorf("event %s of %s carries price %v, not the new owner's %v", ev.Type, ev.NodeID, p, ownerPrice)
			}
		}
	}
	if terminal != 1 {
		t.Errorf("%d terminal events, want 1: %v", terminal, eventTypes(h.events("stale", id)))
	}
	var intents []contract.OrderIntent
	for _, m := range h.messages(contract.StreamOrders, "flow.orders.>") {
		var o contract.OrderIntent
		if err := json.Unmarshal(m.Data(), &o); err != nil {
			t.Fatal(err)
		}
		intents = append(intents, o)
	}
	if len(intents) != 1 || intents[0].LimitPrice != ownerPrice {
		t.Errorf("order intents %+v, want one at the new owner's price %v", intents, ownerPrice)
	}
}

// priceOf is the price a node's outputs carry: the quote's price or the order's limit.
func priceOf(nodeID string, outputs map[string]any) any {
	if nodeID == "buy" {
		return outputs["limit_price"]
	}
	return outputs["price"]
}

// getJSON decodes the value of key in flow_state into v.
func (h *harness) getJSON(key string, v any) {
	h.t.Helper()
	e, err := h.stateKV().Get(h.ctx, key)
	if err != nil {
		h.t.Fatalf("read %s: %v", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		h.t.Fatalf("decode %s: %v", key, err)
	}
}

// inFlight reads flowguard_executions_in_flight from a worker's /metrics.
func inFlight(addr string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "flowguard_executions_in_flight "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, errors.New("no flowguard_executions_in_flight in /metrics")
}

// Issue 11, "crash with default settings": workers SIGKILLed under load, with no
// flag changed, lose nothing and fail nothing: every request completes exactly
// once with one order intent. Fails on the core before issue 11: a killed worker's
// executions wait the default ack wait (30s), longer than the workflow's timeout,
// and end failed (timeout).
func TestSIGKILLWithDefaultSettingsCompletesEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	const requests, inFlightMax, kills = 600, 32, 4
	h := newHarness(t)
	f := newDefaultFleet(t, h.srv.URL())
	names := []string{"w1", "w2", "w3"}
	for _, n := range names {
		f.start(n)
	}
	// The workflow's timeout is shorter than the default ack wait (30s): an execution
	// left orphaned until the ack wait ends would fail as a timeout.
	h.deploy(strings.Replace(fmt.Sprintf(crashWorkflow, "100ms"), `"id": "crash",`, `"id": "crash", "timeout": "20s",`, 1))

	// A closed-loop driver keeps inFlightMax requests outstanding: a new one is sent
	// as one ends (its terminal event seen).
	var ended atomic.Int64
	wake := make(chan struct{}, 1)
	sub, err := h.nc.Subscribe("flow.events.*.crash.*.*", func(m *nats.Msg) {
		if contract.IsTerminalEvent(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]) {
			ended.Add(1)
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ids := make([]string, requests)
	for i := range ids {
		ids[i] = fmt.Sprintf("d-%04d", i)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	driven := make(chan error, 1)
	go func() {
		for i, id := range ids {
			for int64(i)-ended.Load() >= inFlightMax {
				select {
				case <-wake:
				case <-time.After(time.Second): // ended may move without a wake-up left
				case <-ctx.Done():
					driven <- ctx.Err()
					return
				}
			}
			if _, err := h.client.Submit(ctx, &contract.Request{WorkflowID: "crash", BotID: "b1", RequestID: id}); err != nil {
				driven <- fmt.Errorf("submit %s: %w", id, err)
				return
			}
		}
		driven <- nil
	}()

	// Kill a random worker each time another share of the requests has ended, and
	// start it again.
	rng := rand.New(rand.NewPCG(11, 6))
	for k := range kills {
		at := int64((k + 1) * requests / (kills + 2))
		natstest.WaitFor(t, time.Minute, func() error {
			if n := ended.Load(); n < at {
				return fmt.Errorf("%d of %d requests ended before kill %d", n, at, k+1)
			}
			return nil
		})
		victim := rng.IntN(len(names))
		f.kill(names[victim])
		t.Logf("kill %d: %s after %d requests ended", k+1, names[victim], ended.Load())
		names[victim] = fmt.Sprintf("%s-r%d", strings.Split(names[victim], "-")[0], k+1)
		f.start(names[victim])
	}
	select {
	case err := <-driven:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the driver did not submit every request within 2m: %d ended", ended.Load())
	}
	assertExactlyOnce(t, h, "crash", ids, 2*time.Minute)
	if failed := h.messages(contract.StreamEvents, "flow.events.*.crash.*."+contract.ExecutionFailed); len(failed) != 0 {
		t.Errorf("%d execution_failed events, want none", len(failed))
	}
}
