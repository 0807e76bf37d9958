package execution_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/execution"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/provision"
)

// fixture is a real server with the contract's streams and buckets.
type fixture struct {
	ctx    context.Context
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	state  *kvstate.Store
	store  *execution.Store
	events jetstream.Stream
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, natstest.Start(t).URL(), 1)
}

// newFixtureOn is a fixture on a server or cluster of the caller's, with streams
// and buckets of that many replicas.
func newFixtureOn(t *testing.T, url string, replicas int) *fixture {
	t.Helper()
	nc := natstest.Connect(t, url)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	var b *provision.Buckets
	natstest.WaitFor(t, time.Minute, func() error { // a forming cluster may not answer yet
		b, err = provision.Ensure(ctx, js, provision.Config{Replicas: replicas})
		return err
	})
	events, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	state := kvstate.New(b.State, b.Workflows)
	return &fixture{ctx: ctx, js: js, kv: b.State, state: state, events: events,
		store: execution.New(js, state, b.State.Bucket(), contract.Subjects{Prefix: contract.DefaultPrefix})}
}

var id = execution.Identity{ExecutionID: "x1", WorkflowID: "wf", BotID: contract.NoBot, CorrelationID: "c1"}

func running(worker string) *contract.Status {
	now := time.Now().UTC()
	return &contract.Status{ExecutionID: "x1", WorkflowID: "wf", Status: contract.StatusRunning, WorkerID: worker,
		StreamSeq: 1, CreatedAt: &now, UpdatedAt: now}
}

// claim claims x1 for worker, taking it over when it exists. On a cluster, a read
// may be answered by a replica that has not caught up yet (direct get), and the
// claim by its revision is then refused: the status is read again until the
// claim lands.
func (f *fixture) claim(t *testing.T, worker string) *execution.Owner {
	t.Helper()
	var o *execution.Owner
	natstest.WaitFor(t, 30*time.Second, func() error {
		_, rev, err := f.state.Status(f.ctx, "wf", "x1")
		if err != nil && !errors.Is(err, kvstate.ErrNotFound) {
			t.Fatal(err)
		}
		o, err = f.store.Claim(f.ctx, running(worker), rev, id, 0)
		if err != nil && !errors.Is(err, execution.ErrClaimed) {
			t.Fatalf("%s claims: %v", worker, err)
		}
		if err != nil {
			return fmt.Errorf("%s claims: %w", worker, err)
		}
		return nil
	})
	return o
}

func (f *fixture) eventsOf(t *testing.T) []contract.Event {
	t.Helper()
	cons, err := f.events.OrderedConsumer(f.ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"flow.events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.events.Info(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := info.State.Msgs
	var out []contract.Event
	for range n {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var ev contract.Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// Two owners in one process: once B has taken the execution over, every write of
// A, the stale owner, is refused by the server, and B resumes from A's state as
// it was at the takeover, never from a write A made after it.
func TestAStaleOwnersWritesAreRefused(t *testing.T) {
	f := newFixture(t)
	a := f.claim(t, "a")
	if err := a.Emit(contract.Event{Type: contract.ExecutionStarted}); err != nil {
		t.Fatal(err)
	}
	if err := a.Checkpoint(&contract.Checkpoint{NodeID: "n1", State: contract.NodeStateCompleted, Outputs: map[string]any{"by": "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Await(f.ctx); err != nil {
		t.Fatalf("A's writes before the takeover: %v", err)
	}

	b := f.claim(t, "b")
	if b.Claim() <= a.Claim() {
		t.Fatalf("B's claim %d is not after A's %d", b.Claim(), a.Claim())
	}

	// A goes on as if nothing happened.
	if err := a.Emit(contract.Event{Type: contract.NodeStarted, NodeID: "n2"}); err != nil {
		t.Fatal(err)
	}
	_ = a.Checkpoint(&contract.Checkpoint{NodeID: "n2", State: contract.NodeStateCompleted, Outputs: map[string]any{"by": "a"}})
	if err := a.Await(f.ctx); !errors.Is(err, execution.ErrLostOwnership) {
		t.Fatalf("A's checkpoint after the takeover: %v, want ErrLostOwnership", err)
	}
	err := a.PutOrderMark(f.ctx, "buy", &contract.OrderMark{ClientOrderID: "x1.buy", State: contract.OrderPublishing, At: time.Now()})
	if !errors.Is(err, execution.ErrLostOwnership) || !errors.Is(err, nodes.ErrStopped) {
		t.Errorf("A's order mark: %v, want ErrLostOwnership and nodes.ErrStopped", err)
	}
	if err := a.Confirm(f.ctx); !errors.Is(err, execution.ErrLostOwnership) {
		t.Errorf("A confirms: %v, want ErrLostOwnership", err)
	}
	stA := running("a")
	stA.Status = contract.StatusFailed
	err = a.Finish(f.ctx, &contract.Result{ExecutionID: "x1", WorkflowID: "wf", Status: contract.StatusFailed}, stA,
		contract.Event{Type: contract.ExecutionFailed, Error: &contract.Error{Kind: contract.KindTimeout, Message: "stale"}})
	if !errors.Is(err, execution.ErrLostOwnership) {
		t.Fatalf("A finishes: %v, want ErrLostOwnership", err)
	}

	// B sees A's state as of the takeover only.
	cps, err := b.Checkpoints(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 1 || cps["n1"] == nil {
		t.Fatalf("B restores %v, want n1 only", cps)
	}
	if _, err := f.kv.Get(f.ctx, contract.OrderMarkKey("wf", "x1", "buy")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("A's order mark landed: %v", err)
	}
	if _, err := f.state.Result(f.ctx, "wf", "x1"); !errors.Is(err, kvstate.ErrNotFound) {
		t.Errorf("A's result landed: %v", err)
	}

	if err := b.Emit(contract.Event{Type: contract.ExecutionStarted, Resumed: true}); err != nil {
		t.Fatal(err)
	}
	stB := running("b")
	stB.Status = contract.StatusCompleted
	if err := b.Finish(f.ctx, &contract.Result{ExecutionID: "x1", WorkflowID: "wf", Status: contract.StatusCompleted}, stB,
		contract.Event{Type: contract.ExecutionCompleted}); err != nil {
		t.Fatalf("B finishes: %v", err)
	}
	st, _, err := f.state.Status(f.ctx, "wf", "x1")
	if err != nil || st.Status != contract.StatusCompleted || st.WorkerID != "b" {
		t.Fatalf("status %+v %v, want B's completed", st, err)
	}

	// One terminal event, B's; A's events and B's never share an id.
	var terminal []contract.Event
	ids := map[string]bool{}
	for _, ev := range f.eventsOf(t) {
		if ids[ev.EventID] {
			t.Errorf("event id %s stored twice", ev.EventID)
		}
		ids[ev.EventID] = true
		if contract.IsTerminalEvent(ev.Type) {
			terminal = append(terminal, ev)
		}
	}
	if len(terminal) != 1 || terminal[0].Type != contract.ExecutionCompleted || terminal[0].EventID != execution.EventID("x1", b.Claim(), terminal[0].Seq) {
		t.Fatalf("terminal events %+v, want B's execution_completed only", terminal)
	}
}

// A claim is exclusive: a second Create, or an Update from a stale revision, is
// ErrClaimed.
func TestAClaimIsExclusive(t *testing.T) {
	f := newFixture(t)
	a := f.claim(t, "a")
	if _, err := f.store.Claim(f.ctx, running("b"), 0, id, 0); !errors.Is(err, execution.ErrClaimed) {
		t.Errorf("second create: %v, want ErrClaimed", err)
	}
	f.claim(t, "b")
	if _, err := f.store.Claim(f.ctx, running("c"), a.Claim(), id, 0); !errors.Is(err, execution.ErrClaimed) {
		t.Errorf("update from A's revision after B's claim: %v, want ErrClaimed", err)
	}
}

// Pipelined writes are all stored by Await, in order, with the claim in their ids.
func TestPipelinedWritesAreStoredByAwait(t *testing.T) {
	f := newFixture(t)
	o := f.claim(t, "a")
	for i := range 50 {
		if err := o.Emit(contract.Event{Type: contract.NodeStarted, NodeID: "n", Attempt: i + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Await(f.ctx); err != nil {
		t.Fatal(err)
	}
	evs := f.eventsOf(t)
	if len(evs) != 50 {
		t.Fatalf("%d events stored, want 50", len(evs))
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) || ev.EventID != execution.EventID("x1", o.Claim(), ev.Seq) {
			t.Fatalf("event %d: seq %d id %s", i, ev.Seq, ev.EventID)
		}
	}
}

// In a replicated stream the server refuses a second write that expects the status
// key's sequence while an earlier one is still being replicated (error 10164): the
// owner stores it again, so pipelined writes all land; a stale owner's are still
// refused.
func TestFencingHoldsOnAReplicatedStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-server cluster")
	}
	urls := natstest.StartCluster(t, 3)
	f := newFixtureOn(t, urls[0], 3)
	a := f.claim(t, "a")
	for i := range 20 {
		node := fmt.Sprintf("n%d", i)
		if err := a.Checkpoint(&contract.Checkpoint{NodeID: node, State: contract.NodeStateCompleted}); err != nil {
			t.Fatal(err)
		}
		if err := a.Emit(contract.Event{Type: contract.NodeCompleted, NodeID: node}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Await(f.ctx); err != nil {
		t.Fatalf("pipelined writes of the owner: %v", err)
	}
	b := f.claim(t, "b")
	cps, err := b.Checkpoints(f.ctx)
	if err != nil || len(cps) != 20 {
		t.Fatalf("B restores %d checkpoints (%v), want 20", len(cps), err)
	}
	_ = a.Checkpoint(&contract.Checkpoint{NodeID: "late", State: contract.NodeStateCompleted})
	if err := a.Await(f.ctx); !errors.Is(err, execution.ErrLostOwnership) {
		t.Fatalf("A's write after the takeover: %v, want ErrLostOwnership", err)
	}
}
