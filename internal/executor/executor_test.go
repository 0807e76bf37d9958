package executor

import (
	"context"
	"errors"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/workflow"
)

// memCheckpoints keeps checkpoints in memory.
type memCheckpoints struct {
	mu  sync.Mutex
	cps map[string]*contract.Checkpoint
}

func (m *memCheckpoints) Checkpoint(cp *contract.Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cps == nil {
		m.cps = map[string]*contract.Checkpoint{}
	}
	m.cps[cp.NodeID] = cp
	return nil
}

func (m *memCheckpoints) Checkpoints(context.Context) (map[string]*contract.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.cps), nil
}

// recorder keeps events in memory, numbered.
type recorder struct {
	mu     sync.Mutex
	events []contract.Event
}

func (r *recorder) Emit(ev contract.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev.Seq = uint64(len(r.events) + 1)
	r.events = append(r.events, ev)
	return nil
}

// memState is an in-memory State: checkpoints and events.
type memState struct {
	*memCheckpoints
	*recorder
	confirms atomic.Int32
}

func (m *memState) Confirm(context.Context) error {
	m.confirms.Add(1)
	return nil
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		s := e.Type
		if e.NodeID != "" {
			s += ":" + e.NodeID
		}
		out = append(out, s)
	}
	return out
}

// script is a node type whose nodes run functions chosen by node id.
type script map[string]func(ctx context.Context, in nodes.Input) (nodes.Result, error)

func (s script) Compile(n workflow.Node) (nodes.Runner, error) {
	fn, ok := s[n.ID]
	if !ok {
		fn = func(context.Context, nodes.Input) (nodes.Result, error) {
			return nodes.Result{Outputs: map[string]any{"ok": true}}, nil
		}
	}
	return runnerFunc(fn), nil
}

type runnerFunc func(ctx context.Context, in nodes.Input) (nodes.Result, error)

func (f runnerFunc) Run(ctx context.Context, in nodes.Input) (nodes.Result, error) { return f(ctx, in) }

// node is a shorthand for a workflow node of the script type.
func node(id string, deps ...string) workflow.Node {
	return workflow.Node{ID: id, Type: "script", DependsOn: deps}
}

func plan(t *testing.T, s script, def *workflow.Definition) *Plan {
	t.Helper()
	if def.ID == "" {
		def.ID = "wf"
	}
	if err := def.Check(); err != nil {
		t.Fatal(err)
	}
	reg := nodes.NewRegistry()
	reg.Register("script", s)
	runners, err := reg.Compile(def)
	if err != nil {
		t.Fatal(err)
	}
	return NewPlan(def, 1, runners)
}

type fixture struct {
	cps *memCheckpoints
	rec *recorder
	e   *Executor
}

func newFixture(guard Guard, maxParallel int) *fixture {
	f := &fixture{cps: &memCheckpoints{}, rec: &recorder{}}
	f.e = New(guard, Config{MaxParallelNodes: maxParallel})
	return f
}

func (f *fixture) run(ctx context.Context, p *Plan, resume bool) Outcome {
	x := &Execution{ID: "x1", WorkflowID: p.Def.ID, CorrelationID: "c1", Inputs: map[string]any{"n": 2.0}, Plan: p, Resume: resume}
	return f.e.Run(ctx, x, &memState{memCheckpoints: f.cps, recorder: f.rec})
}

func fail(kind string) func(context.Context, nodes.Input) (nodes.Result, error) {
	return func(context.Context, nodes.Input) (nodes.Result, error) {
		return nodes.Result{}, nodes.Permanent(kind, errors.New("boom"))
	}
}

func TestNodeSeesOutputsOfItsAncestorsOnly(t *testing.T) {
	var seen map[string]map[string]any
	s := script{
		"a": func(context.Context, nodes.Input) (nodes.Result, error) {
			return nodes.Result{Outputs: map[string]any{"v": 1}}, nil
		},
		"c": func(_ context.Context, in nodes.Input) (nodes.Result, error) {
			seen = in.Env.Nodes
			return nodes.Result{}, nil
		},
	}
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("a"), node("b", "a"), node("c", "b"), node("other")}}), false)
	if out.Status != contract.StatusCompleted {
		t.Fatalf("outcome %+v", out)
	}
	if _, ok := seen["a"]; !ok || len(seen) != 2 {
		t.Errorf("node c saw %v, want outputs of a and b only", seen)
	}
}

func TestFalseConditionSkipsDependentsTransitively(t *testing.T) {
	s := script{"gate": func(context.Context, nodes.Input) (nodes.Result, error) {
		return nodes.Result{Outputs: map[string]any{"result": false}, Skip: "condition is false"}, nil
	}}
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{
		node("gate"), node("act", "gate"), node("after", "act"), node("free"),
	}}), false)
	if out.Status != contract.StatusCompleted {
		t.Fatalf("outcome %+v", out)
	}
	types := f.rec.types()
	for _, want := range []string{"node_skipped:act", "node_skipped:after", "node_completed:free", "node_completed:gate"} {
		if !slices.Contains(types, want) {
			t.Errorf("events %v lack %s", types, want)
		}
	}
	if slices.Contains(types, "node_started:act") {
		t.Errorf("a skipped node started: %v", types)
	}
	if f.cps.cps["after"].State != contract.NodeStateSkipped {
		t.Errorf("skipped node not checkpointed as skipped: %+v", f.cps.cps["after"])
	}
}

func TestFailedNodeFailsTheExecutionAndStopsSiblings(t *testing.T) {
	var siblingCanceled atomic.Bool
	s := script{
		"bad": fail("exchange_error"),
		"slow": func(ctx context.Context, _ nodes.Input) (nodes.Result, error) {
			<-ctx.Done()
			siblingCanceled.Store(true)
			return nodes.Result{}, ctx.Err()
		},
	}
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("slow"), node("bad"), node("never", "bad")}}), false)
	if out.Status != contract.StatusFailed || out.FailedNode != "bad" || out.Error.Kind != "exchange_error" {
		t.Fatalf("outcome %+v", out)
	}
	if !siblingCanceled.Load() {
		t.Error("the running sibling was not canceled")
	}
	types := f.rec.types()
	if slices.Contains(types, "node_started:never") {
		t.Errorf("a dependent of the failed node started: %v", types)
	}
	var slowFailed *contract.Event
	for i := range f.rec.events {
		if e := f.rec.events[i]; e.Type == contract.NodeFailed && e.NodeID == "slow" {
			slowFailed = &e
		}
	}
	if slowFailed == nil || slowFailed.Error.Kind != contract.KindCanceled || !strings.Contains(slowFailed.Error.Message, "bad") {
		t.Errorf("stopped sibling event = %+v", slowFailed)
	}
}

func TestContinueOnErrorSkipsDependentsAndCompletes(t *testing.T) {
	s := script{"optional": fail("webhook_error")}
	def := &workflow.Definition{Nodes: []workflow.Node{node("optional"), node("notify", "optional"), node("main")}}
	def.Nodes[0].ContinueOnError = true
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, def), false)
	if out.Status != contract.StatusCompleted {
		t.Fatalf("outcome %+v", out)
	}
	types := f.rec.types()
	if !slices.Contains(types, "node_failed:optional") || !slices.Contains(types, "node_skipped:notify") || !slices.Contains(types, "node_completed:main") {
		t.Errorf("events %v", types)
	}
}

func TestNodeTimeoutFailsWithKindTimeout(t *testing.T) {
	s := script{"slow": func(ctx context.Context, _ nodes.Input) (nodes.Result, error) {
		<-ctx.Done()
		return nodes.Result{}, ctx.Err()
	}}
	def := &workflow.Definition{Nodes: []workflow.Node{node("slow")}}
	def.Nodes[0].Timeout = workflow.Duration(20 * time.Millisecond)
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, def), false)
	if out.Status != contract.StatusFailed || out.Error.Kind != contract.KindTimeout || !strings.Contains(out.Error.Message, "20ms") {
		t.Fatalf("outcome %+v", out)
	}
}

func TestWorkflowTimeoutFailsTheExecution(t *testing.T) {
	s := script{"slow": func(ctx context.Context, _ nodes.Input) (nodes.Result, error) {
		<-ctx.Done()
		return nodes.Result{}, context.Cause(ctx)
	}}
	def := &workflow.Definition{Timeout: workflow.Duration(30 * time.Millisecond), Nodes: []workflow.Node{node("slow")}}
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, def), false)
	if out.Status != contract.StatusFailed || out.Error.Kind != contract.KindTimeout || !strings.Contains(out.Error.Message, "workflow timed out") {
		t.Fatalf("outcome %+v", out)
	}
	if types := f.rec.types(); !slices.Contains(types, "node_failed:slow") {
		t.Errorf("the interrupted node has no node_failed: %v", types)
	}
}

func TestMaxParallelNodesBoundsConcurrency(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	busy := func(context.Context, nodes.Input) (nodes.Result, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release // hold the slot until the test has seen the bound reached
		running.Add(-1)
		return nodes.Result{}, nil
	}
	s := script{"a": busy, "b": busy, "c": busy, "d": busy}
	f := newFixture(nil, 2)
	done := make(chan Outcome)
	go func() {
		done <- f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("a"), node("b"), node("c"), node("d")}}), false)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d nodes started", running.Load())
		}
		runtime.Gosched()
	}
	close(release)
	if out := <-done; out.Status != contract.StatusCompleted {
		t.Fatalf("outcome %+v", out)
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("%d nodes ran at once, want the bound, 2", p)
	}
}

func TestResumeRestoresCheckpointsWithoutRerunning(t *testing.T) {
	var runs sync.Map
	count := func(id string) func(context.Context, nodes.Input) (nodes.Result, error) {
		return func(_ context.Context, in nodes.Input) (nodes.Result, error) {
			v, _ := runs.LoadOrStore(id, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
			return nodes.Result{Outputs: map[string]any{"from": id, "saw": len(in.Env.Nodes)}}, nil
		}
	}
	s := script{"a": count("a"), "b": count("b"), "c": count("c")}
	p := plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("a"), node("b", "a"), node("c", "b")}})
	f := newFixture(nil, 0)
	_ = f.cps.Checkpoint(&contract.Checkpoint{NodeID: "a", State: contract.NodeStateCompleted, Outputs: map[string]any{"from": "checkpoint"}})

	out := f.run(context.Background(), p, true)
	if out.Status != contract.StatusCompleted {
		t.Fatalf("outcome %+v", out)
	}
	if _, ran := runs.Load("a"); ran {
		t.Error("a restored node ran again")
	}
	if out.Outputs["a"]["from"] != "checkpoint" || out.Outputs["c"]["saw"] != 2 {
		t.Errorf("outputs %v", out.Outputs)
	}
	first := f.rec.events[0]
	if first.Type != contract.ExecutionStarted || !first.Resumed || !slices.Equal(first.RestoredNodes, []string{"a"}) {
		t.Errorf("first event %+v", first)
	}
}

// haltGuard halts every watched execution when trip is closed.
type haltGuard struct{ trip chan struct{} }

func (g *haltGuard) CanOperate(context.Context, *Execution, bool) error { return nil }

func (g *haltGuard) Watch(_ *Execution, cancel context.CancelCauseFunc) func() {
	stop := make(chan struct{})
	go func() {
		select {
		case <-g.trip:
			cancel(&contract.HaltError{Scope: "global", Reason: "operator"})
		case <-stop:
		}
	}()
	return func() { close(stop) }
}

func TestHaltInterruptsARunningNode(t *testing.T) {
	g := &haltGuard{trip: make(chan struct{})}
	s := script{"long": func(ctx context.Context, _ nodes.Input) (nodes.Result, error) {
		close(g.trip) // the halt arrives while the node runs
		<-ctx.Done()
		return nodes.Result{}, context.Cause(ctx)
	}}
	f := newFixture(g, 0)
	out := f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("long"), node("next", "long")}}), false)
	if out.Status != contract.StatusHalted || out.Error.Kind != contract.KindHalted || !strings.Contains(out.Error.Message, "operator") {
		t.Fatalf("outcome %+v", out)
	}
	if types := f.rec.types(); slices.Contains(types, "node_started:next") || !slices.Contains(types, "node_failed:long") {
		t.Errorf("events %v", types)
	}
}

func TestCanceledContextInterruptsWithoutTerminalState(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := script{"long": func(c context.Context, _ nodes.Input) (nodes.Result, error) {
		cancel() // the worker shuts down
		<-c.Done()
		return nodes.Result{}, c.Err()
	}}
	f := newFixture(nil, 0)
	out := f.run(ctx, plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("long")}}), false)
	if !out.Interrupted() {
		t.Fatalf("outcome %+v, want interrupted", out)
	}
	if _, ok := f.cps.cps["long"]; ok {
		t.Error("an interrupted node was checkpointed")
	}
}

func TestPanickingNodeFailsWithoutCrashing(t *testing.T) {
	s := script{"bad": func(context.Context, nodes.Input) (nodes.Result, error) {
		var m map[string]int
		m["boom"]++ // a bug in a node
		return nodes.Result{}, nil
	}}
	f := newFixture(nil, 0)
	out := f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("bad")}}), false)
	if out.Status != contract.StatusFailed || out.Error.Kind != KindPanic {
		t.Fatalf("outcome %+v", out)
	}
}

// providerScript is a node type whose nodes call provider "exchange" and run
// functions chosen by node id.
type providerScript map[string]func(ctx context.Context, in nodes.Input) (nodes.Result, error)

func (s providerScript) Compile(n workflow.Node) (nodes.Runner, error) {
	return providerRunner{fn: s[n.ID]}, nil
}

type providerRunner struct {
	fn func(ctx context.Context, in nodes.Input) (nodes.Result, error)
}

func (p providerRunner) Run(ctx context.Context, in nodes.Input) (nodes.Result, error) {
	return p.fn(ctx, in)
}
func (providerRunner) Provider() string { return "exchange" }

// instantTimer fires at once: retry schedules are checked without waiting.
type instantTimer struct{ c chan time.Time }

func (t *instantTimer) Start(time.Duration) { t.c <- time.Time{} }
func (t *instantTimer) Stop()               {}
func (t *instantTimer) C() <-chan time.Time { return t.c }

// providerFixture is an executor with a resilience chain (3 attempts, waits 1s
// then 2s, exact; breaker threshold 3) and a registry holding the provider type.
func providerFixture(t *testing.T, threshold uint32) *fixture {
	t.Helper()
	chain, err := resilience.New(resilience.Options{
		Settings: resilience.Settings{
			Timeout: time.Second,
			Retry:   resilience.RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: time.Minute, Multiplier: 2},
			Breaker: resilience.BreakerSettings{Threshold: threshold, OpenTime: time.Hour},
		},
		Transient: nodes.IsTransient,
		NewTimer:  func() resilience.Timer { return &instantTimer{c: make(chan time.Time, 1)} },
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{cps: &memCheckpoints{}, rec: &recorder{}}
	f.e = New(nil, Config{Resilience: chain})
	return f
}

func providerPlan(t *testing.T, s providerScript, def *workflow.Definition) *Plan {
	t.Helper()
	def.ID = "wf"
	reg := nodes.NewRegistry()
	reg.Register("provider", s)
	runners, err := reg.Compile(def)
	if err != nil {
		t.Fatal(err)
	}
	return NewPlan(def, 1, runners)
}

// flaky fails transiently n times, then succeeds; it counts its calls.
func flaky(n int32, calls *atomic.Int32) func(context.Context, nodes.Input) (nodes.Result, error) {
	return func(_ context.Context, in nodes.Input) (nodes.Result, error) {
		if c := calls.Add(1); c <= n {
			return nodes.Result{}, nodes.Transient(nodes.KindHTTPStatus, errors.New("HTTP 503"))
		}
		return nodes.Result{Outputs: map[string]any{"attempt": in.Attempt}}, nil
	}
}

func TestProviderNodeRetriesAndReportsEachRetry(t *testing.T) {
	var calls atomic.Int32
	f := providerFixture(t, 10)
	p := providerPlan(t, providerScript{"quote": flaky(2, &calls)}, &workflow.Definition{Nodes: []workflow.Node{{ID: "quote", Type: "provider"}}})
	out := f.run(context.Background(), p, false)
	if out.Status != contract.StatusCompleted || out.Outputs["quote"]["attempt"] != 3 {
		t.Fatalf("outcome %+v", out)
	}
	var retries []contract.Event
	var completed contract.Event
	for _, ev := range f.rec.events {
		switch ev.Type {
		case contract.NodeRetrying:
			retries = append(retries, ev)
		case contract.NodeCompleted:
			completed = ev
		}
	}
	if len(retries) != 2 {
		t.Fatalf("events %v, want two node_retrying", f.rec.types())
	}
	for i, want := range []struct {
		attempt int
		delayMS int64
	}{{2, 1000}, {3, 2000}} {
		ev := retries[i]
		if ev.Attempt != want.attempt || ev.DelayMS == nil || *ev.DelayMS != want.delayMS || ev.Error == nil || ev.Error.Kind != nodes.KindHTTPStatus || ev.NodeID != "quote" {
			t.Errorf("retry %d: %+v (delay %v, error %+v), want attempt %d after %dms", i+1, ev, ev.DelayMS, ev.Error, want.attempt, want.delayMS)
		}
	}
	if completed.Attempt != 3 || f.cps.cps["quote"].Attempt != 3 {
		t.Errorf("node_completed attempt %d, checkpoint attempt %d; want 3", completed.Attempt, f.cps.cps["quote"].Attempt)
	}
	for i, ev := range f.rec.events {
		if ev.Seq != uint64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
	}
}

func TestNodeRetryOverridesTheWorkerSettings(t *testing.T) {
	var calls atomic.Int32
	f := providerFixture(t, 10)
	def := &workflow.Definition{Nodes: []workflow.Node{{ID: "quote", Type: "provider",
		Retry: &workflow.Retry{MaxAttempts: 2, MinWait: workflow.Duration(5 * time.Second)}}}}
	out := f.run(context.Background(), providerPlan(t, providerScript{"quote": flaky(5, &calls)}, def), false)
	if out.Status != contract.StatusFailed || out.Error.Kind != nodes.KindHTTPStatus || calls.Load() != 2 || !strings.Contains(out.Error.Message, "failed 2 attempts") {
		t.Fatalf("outcome %+v after %d calls; want failure after 2 attempts", out, calls.Load())
	}
	for _, ev := range f.rec.events {
		if ev.Type == contract.NodeRetrying && *ev.DelayMS != 5000 {
			t.Errorf("retry waited %dms, want the node's min wait 5000", *ev.DelayMS)
		}
		if ev.Type == contract.NodeFailed && ev.Attempt != 2 {
			t.Errorf("node_failed attempt %d, want 2", ev.Attempt)
		}
	}
}

func TestOpenBreakerFailsTheNodeWithKindCircuitOpen(t *testing.T) {
	var calls atomic.Int32
	f := providerFixture(t, 3)
	def := &workflow.Definition{Nodes: []workflow.Node{{ID: "quote", Type: "provider"}}}
	p := providerPlan(t, providerScript{"quote": flaky(100, &calls)}, def)
	// The first execution's 3 attempts open the breaker; the next fails at once.
	if out := f.run(context.Background(), p, false); out.Status != contract.StatusFailed || out.Error.Kind != nodes.KindHTTPStatus {
		t.Fatalf("first outcome %+v", out)
	}
	out := f.run(context.Background(), p, false)
	if out.Status != contract.StatusFailed || out.Error.Kind != contract.KindCircuitOpen || calls.Load() != 3 {
		t.Fatalf("second outcome %+v after %d calls; want circuit_open without a call", out, calls.Load())
	}
}

func TestOtherNodesAreNotRetried(t *testing.T) {
	var calls atomic.Int32
	f := providerFixture(t, 10)
	s := script{"calc": flaky(1, &calls)}
	out := f.run(context.Background(), plan(t, s, &workflow.Definition{Nodes: []workflow.Node{node("calc")}}), false)
	if out.Status != contract.StatusFailed || calls.Load() != 1 || slices.Contains(f.rec.types(), contract.NodeRetrying+":calc") {
		t.Fatalf("outcome %+v after %d calls, events %v", out, calls.Load(), f.rec.types())
	}
}

func TestRetriesNeverOutliveTheWorkflowTimeout(t *testing.T) {
	var calls atomic.Int32
	f := providerFixture(t, 10)
	// The first retry would wait 1s; the workflow has 300ms.
	def := &workflow.Definition{Timeout: workflow.Duration(300 * time.Millisecond), Nodes: []workflow.Node{{ID: "quote", Type: "provider"}}}
	out := f.run(context.Background(), providerPlan(t, providerScript{"quote": flaky(100, &calls)}, def), false)
	if out.Status != contract.StatusFailed || calls.Load() != 1 || !strings.Contains(out.Error.Message, "would pass the workflow deadline") {
		t.Fatalf("outcome %+v after %d calls", out, calls.Load())
	}
}

// refusingGuard refuses provider nodes with a node error and stops at a fixed error.
type refusingGuard struct{ stop error }

func (g refusingGuard) CanOperate(_ context.Context, _ *Execution, sideEffects bool) error {
	if g.stop != nil {
		return g.stop
	}
	if sideEffects {
		return nodes.Permanent("emergency_state_unknown", errors.New("state unknown"))
	}
	return nil
}

func (refusingGuard) Watch(*Execution, context.CancelCauseFunc) func() { return func() {} }

func TestGuardRefusalFailsOnlyProviderNodesWithoutStartingThem(t *testing.T) {
	var called atomic.Int32
	p := providerPlan(t, providerScript{"call": func(context.Context, nodes.Input) (nodes.Result, error) {
		called.Add(1)
		return nodes.Result{}, nil
	}}, &workflow.Definition{Nodes: []workflow.Node{{ID: "call", Type: "provider"}}})
	f := newFixture(refusingGuard{}, 0)
	out := f.run(context.Background(), p, false)
	if out.Status != contract.StatusFailed || out.Error.Kind != "emergency_state_unknown" || called.Load() != 0 {
		t.Fatalf("outcome %+v, calls %d", out, called.Load())
	}
	if types := f.rec.types(); slices.Contains(types, "node_started:call") || !slices.Contains(types, "node_failed:call") {
		t.Errorf("events %v", types)
	}
}

func TestGuardStopInterruptsWithoutTerminalState(t *testing.T) {
	lost := errors.New("another worker took over")
	f := newFixture(refusingGuard{stop: lost}, 0)
	out := f.run(context.Background(), plan(t, script{}, &workflow.Definition{Nodes: []workflow.Node{node("a")}}), false)
	if !out.Interrupted() || !errors.Is(out.Cause, lost) {
		t.Fatalf("outcome %+v", out)
	}
}

// Outputs over the bound fail their node with bad_response, and so do outputs that
// would take the execution's over its bound (ExecutionOutputFactor times it).
func TestOutputsOverTheBoundFailTheNode(t *testing.T) {
	sized := func(n int) func(context.Context, nodes.Input) (nodes.Result, error) {
		return func(context.Context, nodes.Input) (nodes.Result, error) {
			return nodes.Result{Outputs: map[string]any{"s": strings.Repeat("x", n)}}, nil
		}
	}
	for _, tc := range []struct {
		name   string
		s      script
		nodes  []workflow.Node
		failed string
	}{
		{"one node", script{"a": sized(2000)}, []workflow.Node{node("a")}, "a"},
		{"the execution", script{"a": sized(900), "b": sized(900), "c": sized(900), "d": sized(900)},
			[]workflow.Node{node("a"), node("b", "a"), node("c", "b"), node("d", "c")}, "d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(t, tc.s, &workflow.Definition{Nodes: tc.nodes})
			f := &fixture{cps: &memCheckpoints{}, rec: &recorder{}}
			f.e = New(nil, Config{MaxOutputBytes: 1024})
			out := f.run(context.Background(), p, false)
			if out.Status != contract.StatusFailed || out.FailedNode != tc.failed || out.Error.Kind != nodes.KindBadResponse {
				t.Fatalf("outcome %+v %+v, want node %s failed with %s", out, out.Error, tc.failed, nodes.KindBadResponse)
			}
		})
	}
}

// The workflow timeout counts the time the execution ran, as its checkpoints
// recorded it, not the time since it first started: a resumed execution whose
// earlier attempts used up the timeout times out; one that ran little goes on,
// and its checkpoints carry the time on.
func TestWorkflowTimeoutCountsTheTimeRunInCheckpoints(t *testing.T) {
	timeout := time.Hour
	for _, tc := range []struct {
		ranMS int64
		want  string
	}{
		{ranMS: timeout.Milliseconds(), want: contract.StatusFailed},
		{ranMS: 1000, want: contract.StatusCompleted},
	} {
		def := &workflow.Definition{Timeout: workflow.Duration(timeout), Nodes: []workflow.Node{node("a"), node("b", "a")}}
		f := newFixture(nil, 0)
		_ = f.cps.Checkpoint(&contract.Checkpoint{NodeID: "a", State: contract.NodeStateCompleted, RunMS: tc.ranMS})
		out := f.run(context.Background(), plan(t, script{}, def), true)
		if out.Status != tc.want || (tc.want == contract.StatusFailed && out.Error.Kind != contract.KindTimeout) {
			t.Errorf("ran %d ms before: outcome %+v, want %s", tc.ranMS, out, tc.want)
		}
		if cps, _ := f.cps.Checkpoints(context.Background()); tc.want == contract.StatusCompleted && cps["b"].RunMS < tc.ranMS {
			t.Errorf("b's checkpoint says the execution ran %d ms, less than the %d ms before", cps["b"].RunMS, tc.ranMS)
		}
	}
}

// A pure node's checkpoint is kept back until a node that is not pure starts,
// with those of pure nodes on other branches; one kept back when the execution
// ends is never written.
func TestPureCheckpointsWaitForANodeThatIsNotPure(t *testing.T) {
	transform := func(id string, deps ...string) workflow.Node {
		return workflow.Node{ID: id, Type: "transform", DependsOn: deps, Config: []byte(`{"outputs": {"x": "1"}}`)}
	}
	f := newFixture(nil, 1) // one node at a time: t1, t2, then s
	var atStart []string
	s := script{"s": func(context.Context, nodes.Input) (nodes.Result, error) {
		cps, _ := f.cps.Checkpoints(context.Background())
		atStart = slices.Sorted(maps.Keys(cps))
		return nodes.Result{Outputs: map[string]any{"ok": true}}, nil
	}}
	p := plan(t, s, &workflow.Definition{Nodes: []workflow.Node{
		transform("t1"), transform("t2"), node("s", "t1"), transform("t3", "s"),
	}})
	if out := f.run(context.Background(), p, false); out.Status != contract.StatusCompleted {
		t.Fatalf("outcome %+v", out)
	}
	if !slices.Equal(atStart, []string{"t1", "t2"}) {
		t.Errorf("checkpoints stored when s started: %v, want t1 and t2", atStart)
	}
	cps, _ := f.cps.Checkpoints(context.Background())
	if got := slices.Sorted(maps.Keys(cps)); !slices.Equal(got, []string{"s", "t1", "t2"}) {
		t.Errorf("checkpoints at the end: %v, want s, t1 and t2 (t3 is superseded by the result)", got)
	}
	if types := f.rec.types(); !slices.Contains(types, "node_completed:t3") || !slices.Contains(types, "node_started:t3") {
		t.Errorf("events %v lack t3's", types)
	}
}
