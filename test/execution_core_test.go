package test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/worker"
)

// chain3 is the 3-node transform chain of the performance figures.
const chain3 = `{"id": "chain3", "nodes": [
  {"id": "a", "type": "transform", "config": {"outputs": {"x": "1"}}},
  {"id": "b", "type": "transform", "depends_on": ["a"], "config": {"outputs": {"x": "nodes.a.x + 1"}}},
  {"id": "c", "type": "transform", "depends_on": ["b"], "config": {"outputs": {"x": "nodes.b.x + 1"}}}
]}`

// roundTrips records the round trips an execution waited for, one after another.
type roundTrips struct {
	mu   sync.Mutex
	list []string
}

func (r *roundTrips) RoundTrip(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, what)
}

func (r *roundTrips) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.list
	r.list = nil
	return out
}

// lastSeq is the last sequence of a stream: how many messages it ever stored.
func (h *harness) lastSeq(stream string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(h.ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// A 3-node transform execution waits for at most 5 round trips, one after
// another, from its claim to its ack; everything else is pipelined. The server
// confirms the work done: 7 writes to flow_state and 8 events, no more.
func TestA3NodeExecutionTakesAtMost5SequentialRoundTrips(t *testing.T) {
	h := newHarness(t)
	rt := &roundTrips{}
	h.startWorker("w1", func(c *worker.Config) { c.RoundTrips = rt })
	h.deploy(chain3)
	// Warm up until the watch of the bucket has delivered the workflow: until then
	// a request reads it.
	natstest.WaitFor(t, 20*time.Second, func() error {
		rt.take()
		if st := h.waitStatus("chain3", h.submit(&contract.Request{WorkflowID: "chain3"}), 10*time.Second); st.Status != contract.StatusCompleted {
			t.Fatalf("warm-up: %s %+v", st.Status, st.Error)
		}
		h.waitAllAcked(10 * time.Second)
		if got := rt.take(); slices.Contains(got, "read workflow") {
			return fmt.Errorf("the workflow was still read: %q", got)
		}
		return nil
	})
	state, events := h.lastSeq("KV_"+contract.BucketState), h.lastSeq(contract.StreamEvents)

	id := h.submit(&contract.Request{WorkflowID: "chain3"})
	if st := h.waitStatus("chain3", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("%s %+v", st.Status, st.Error)
	}
	h.waitAllAcked(10 * time.Second)
	got := rt.take()
	if want := []string{"claim", "await writes", "final status", "terminal event"}; !slices.Equal(got, want) {
		t.Errorf("sequential round trips %q, want %q", got, want)
	}
	if len(got) > 5 {
		t.Errorf("%d sequential round trips, want at most 5", len(got))
	}
	// status create, latest execution, result, final status: transform nodes
	// write no checkpoint, as no node after them has side effects
	if n := h.lastSeq("KV_"+contract.BucketState) - state; n != 4 {
		t.Errorf("%d writes to %s, want 4", n, contract.BucketState)
	}
	for _, node := range []string{"a", "b", "c"} {
		if _, err := h.stateKV().Get(h.ctx, contract.CheckpointKey("chain3", id, node)); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("checkpoint of transform node %s: %v, want none", node, err)
		}
	}
	// execution_started, node_started and node_completed of 3 nodes, execution_completed
	if n := h.lastSeq(contract.StreamEvents) - events; n != 8 {
		t.Errorf("%d events, want 8", n)
	}
}

// replayPlacedOrder runs an order once, lets blocker make a fresh order
// impossible, then replays the execution as after a crash before its checkpoint:
// the order node reports the stored intent as a duplicate, runs no check, and
// the execution completes with one intent and no halt.
func replayPlacedOrder(t *testing.T, h *harness, blocker func(), blocked func(*contract.Status) error) {
	t.Helper()
	h.deploy(tradeWorkflow)
	req := &contract.Request{WorkflowID: "trade", BotID: "b1", RequestID: "placed-1",
		Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 2, "price": 65000}}
	id := h.submit(req)
	if st := h.waitStatus("trade", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("first run: %s %+v", st.Status, st.Error)
	}
	blocker()
	// Wait until the worker refuses a fresh order (a probe), so that it knows.
	natstest.WaitFor(t, 10*time.Second, func() error {
		probe := h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1",
			Inputs: map[string]any{"symbol": "PROBE", "side": "buy", "qty": 2, "price": 1}})
		return blocked(h.waitStatus("trade", probe, 10*time.Second))
	})

	h.redeliverAfterCrash(req, "buy")
	natstest.WaitFor(t, 10*time.Second, func() error {
		if n := len(nodeCompletions(h.events("trade", id), "buy")); n != 2 {
			return fmt.Errorf("buy completed %d times, want 2", n)
		}
		return nil
	})
	st := h.waitStatus("trade", id, 10*time.Second)
	if st.Status != contract.StatusCompleted {
		t.Fatalf("replay: %s %+v", st.Status, st.Error)
	}
	replayed := nodeCompletions(h.events("trade", id), "buy")[1]
	if replayed.Outputs["duplicate"] != true || replayed.Outputs["quantity"] != 2.0 {
		t.Errorf("replayed order outputs %v, want the stored intent with duplicate: true", replayed.Outputs)
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.b1"); len(orders) != 1 {
		t.Errorf("%d order intents, want 1", len(orders))
	}
	board, err := h.client.Board(h.ctx)
	if err != nil || board.Get("bot.b1").State == emergency.Halted || board.Get("global").State == emergency.Halted {
		t.Errorf("the replay halted: %+v %v", board, err)
	}
}

func TestAReplayedPlacedOrderIsADuplicateWhileItsBotIsPaused(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	replayPlacedOrder(t, h, func() { h.command("bot.b1", emergency.ActionPause, "replay test") }, func(st *contract.Status) error {
		if st.Error == nil || st.Error.Kind != worker.KindTradingPaused {
			return fmt.Errorf("probe: %s %+v, want %s", st.Status, st.Error, worker.KindTradingPaused)
		}
		return nil
	})
}

func TestAReplayedPlacedOrderIsADuplicateAtItsRiskLimit(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	replayPlacedOrder(t, h, func() {
		// The replayed order would breach this limit and halt; the probe's limit is
		// set after it, so that a refused probe shows both are loaded.
		for _, l := range []contract.RiskLimit{
			{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 1, AutoHalt: true},
			{ID: "probe-size", Type: contract.LimitPositionSize, Symbol: "PROBE", Threshold: 1},
		} {
			if err := h.client.SetLimit(h.ctx, "global", l); err != nil {
				t.Fatal(err)
			}
		}
	}, func(st *contract.Status) error {
		if st.Error == nil || st.Error.Kind != worker.KindRiskLimit {
			return fmt.Errorf("probe: %s %+v, want %s", st.Status, st.Error, worker.KindRiskLimit)
		}
		return nil
	})
}

// An answer whose outputs are over --max-output-bytes fails the node with
// bad_response after one call: it is neither retried nor redelivered.
func TestAnAnswerOverTheOutputCapFailsOnceAsBadResponse(t *testing.T) {
	h := newHarness(t)
	big := `{"data": "` + strings.Repeat("x", 4096) + `"}`
	provider := newScripted(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(big))
	})
	h.startWorker("w1", func(c *worker.Config) { c.MaxOutputBytes = 2048 })
	h.deploy(fmt.Sprintf(`{"id": "big", "nodes": [{"id": "call", "type": "http", "retry": {"max_attempts": 3, "min_wait": "10ms"},
	  "config": {"url": %q, "outputs": {"data": "body.data"}}}]}`, provider.URL))
	id := h.submit(&contract.Request{WorkflowID: "big"})
	st := h.waitStatus("big", id, 10*time.Second)
	if st.Status != contract.StatusFailed || st.Error == nil || st.Error.Kind != nodes.KindBadResponse {
		t.Fatalf("status %s %+v, want failed with %s", st.Status, st.Error, nodes.KindBadResponse)
	}
	if !strings.Contains(st.Error.Message, "--max-output-bytes") {
		t.Errorf("message %q does not say what to do", st.Error.Message)
	}
	h.waitAllAcked(10 * time.Second)
	if n := len(provider.hitTimes()); n != 1 {
		t.Errorf("the provider was called %d times, want 1", n)
	}
	if st.Attempt != 1 {
		t.Errorf("attempt %d, want 1: the request was redelivered", st.Attempt)
	}
}

// Time an execution spent orphaned (its worker died, the request waited to be
// redelivered) does not count against its workflow timeout: an execution first
// started an hour ago, and resumed now, completes.
func TestTimeOrphanedDoesNotCountAgainstTheWorkflowTimeout(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(`{"id": "timed", "timeout": "5s", "nodes": [
	  {"id": "a", "type": "transform", "config": {"outputs": {"x": "1"}}},
	  {"id": "b", "type": "delay", "depends_on": ["a"], "config": {"duration": "10ms"}}]}`)
	req := &contract.Request{WorkflowID: "timed", RequestID: "orphan-1"}
	id := h.submit(req)
	if st := h.waitStatus("timed", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("first run: %s %+v", st.Status, st.Error)
	}
	store := h.store()
	st, rev, err := store.Status(h.ctx, "timed", id)
	if err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour).UTC()
	st.CreatedAt, st.StartedAt = &hourAgo, &hourAgo
	if _, err := store.PutStatus(h.ctx, st, rev); err != nil {
		t.Fatal(err)
	}
	h.redeliverAfterCrash(req, "b")
	natstest.WaitFor(t, 10*time.Second, func() error {
		if n := len(nodeCompletions(h.events("timed", id), "b")); n != 2 {
			return fmt.Errorf("b completed %d times, want 2", n)
		}
		return nil
	})
	if st := h.waitStatus("timed", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("resumed an hour later: %s %+v, want completed", st.Status, st.Error)
	}
}

// A transform's checkpoint is written before a node with side effects starts, so
// that an execution resumed after that node restores both (the provider is not
// called again); a transform after the last such node writes none and runs again.
func TestAResumeAfterAProviderNodeRestoresTheTransformBeforeIt(t *testing.T) {
	h := newHarness(t)
	provider := newScripted(t, answer(http.StatusOK, `{"price": 7}`))
	h.startWorker("w1", nil)
	h.deploy(fmt.Sprintf(`{"id": "mixed", "nodes": [
	  {"id": "a", "type": "transform", "config": {"outputs": {"x": "1"}}},
	  {"id": "b", "type": "http", "depends_on": ["a"], "config": {"url": %q, "outputs": {"price": "body.price"}}},
	  {"id": "c", "type": "transform", "depends_on": ["b"], "config": {"outputs": {"y": "nodes.a.x + nodes.b.price"}}}]}`, provider.URL))
	req := &contract.Request{WorkflowID: "mixed", RequestID: "mixed-1"}
	id := h.submit(req)
	if st := h.waitStatus("mixed", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("first run: %s %+v", st.Status, st.Error)
	}
	for node, want := range map[string]bool{"a": true, "b": true, "c": false} {
		_, err := h.stateKV().Get(h.ctx, contract.CheckpointKey("mixed", id, node))
		if found := err == nil; found != want || (err != nil && !errors.Is(err, jetstream.ErrKeyNotFound)) {
			t.Errorf("checkpoint of %s: %v, want stored %v", node, err, want)
		}
	}

	// The worker died after b, before the final status: the request comes again.
	h.redeliverAfterCrash(req, "c")
	natstest.WaitFor(t, 10*time.Second, func() error {
		if n := len(nodeCompletions(h.events("mixed", id), "c")); n != 2 {
			return fmt.Errorf("c completed %d times, want 2", n)
		}
		return nil
	})
	st := h.waitStatus("mixed", id, 10*time.Second)
	if st.Status != contract.StatusCompleted {
		t.Fatalf("resumed: %s %+v", st.Status, st.Error)
	}
	var started []contract.Event
	for _, ev := range h.events("mixed", id) {
		if ev.Type == contract.ExecutionStarted {
			started = append(started, ev)
		}
	}
	if len(started) != 2 || !started[1].Resumed || !slices.Equal(started[1].RestoredNodes, []string{"a", "b"}) {
		t.Errorf("execution_started events %+v, want a second one resumed with a and b restored", started)
	}
	if n := len(provider.hitTimes()); n != 1 {
		t.Errorf("the provider was called %d times, want 1", n)
	}
	if cs := nodeCompletions(h.events("mixed", id), "c"); cs[0].EventID == cs[1].EventID || cs[1].Seq <= cs[0].Seq {
		t.Errorf("c's completions %s (seq %d) and %s (seq %d): the run again must have its own claim's id, numbered after",
			cs[0].EventID, cs[0].Seq, cs[1].EventID, cs[1].Seq)
	}
	if n := len(nodeCompletions(h.events("mixed", id), "a")); n != 1 {
		t.Errorf("a completed %d times, want 1: it was restored", n)
	}
	var res contract.Result
	h.getJSON(contract.ResultKey("mixed", id), &res)
	if res.Outputs["c"]["y"] != 8.0 {
		t.Errorf("result %+v, want c.y = 8", res)
	}
}
