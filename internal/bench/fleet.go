package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
)

// longWorkflow keeps executions in flight: one node waits a long time.
func longWorkflow(id, wait string) string {
	return fmt.Sprintf(`{"id": %q, "nodes": [{"id": "wait", "type": "delay", "config": {"duration": %q}}]}`, id, wait)
}

// nodeEvents records, per execution, the time (event time) of events of one type.
type nodeEvents struct {
	mu   sync.Mutex
	at   map[string]time.Time
	sub  *nats.Subscription
	keep func(*contract.Event) bool
}

func (e *env) watchEvents(workflowID, eventType string, keep func(*contract.Event) bool) (*nodeEvents, error) {
	w := &nodeEvents{at: map[string]time.Time{}, keep: keep}
	sub, err := e.nc.Subscribe(fmt.Sprintf("flow.events.*.%s.*.%s", workflowID, eventType), func(m *nats.Msg) {
		var ev contract.Event
		if json.Unmarshal(m.Data, &ev) != nil || (w.keep != nil && !w.keep(&ev)) {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, seen := w.at[ev.ExecutionID]; !seen {
			w.at[ev.ExecutionID] = ev.Time
		}
	})
	if err != nil {
		return nil, err
	}
	w.sub = sub
	return w, nil
}

func (w *nodeEvents) snapshot() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]time.Time, len(w.at))
	for k, v := range w.at {
		out[k] = v
	}
	return out
}

func (w *nodeEvents) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.at)
}

// waitFor polls until cond holds or within passes.
func waitFor(ctx context.Context, within time.Duration, what string, cond func() (bool, string)) error {
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reached within %s: %s", what, within, state)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (e *env) command(ctx context.Context, scope, action string) error {
	_, err := e.client.Emergency(ctx, scope, contract.EmergencyCommand{Action: action, Reason: "flowbench", IssuedBy: "flowbench"})
	return err
}

// haltPropagation runs rounds of: inFlight executions running on workers workers,
// then a halt; it measures from publishing the halt until it is in force on each
// worker, until the floor watch receives it, and until each node's interruption
// is reported.
func (e *env) haltPropagation(ctx context.Context, workers, inFlight, rounds int) (*Halt, error) {
	var ids []string
	for i := range workers {
		id := fmt.Sprintf("halt-%d", i+1)
		stop, err := e.startWorker(ctx, id, inFlight/workers)
		if err != nil {
			return nil, err
		}
		defer stop()
		ids = append(ids, id)
	}
	wf := "bench-halt"
	if _, _, err := e.client.Deploy(ctx, []byte(longWorkflow(wf, "10m"))); err != nil {
		return nil, err
	}
	started, err := e.watchEvents(wf, contract.NodeStarted, nil)
	if err != nil {
		return nil, err
	}
	defer started.sub.Unsubscribe()
	interrupted, err := e.watchEvents(wf, contract.NodeFailed, func(ev *contract.Event) bool {
		return ev.Error != nil && ev.Error.Kind == contract.KindHalted
	})
	if err != nil {
		return nil, err
	}
	defer interrupted.sub.Unsubscribe()

	scope := "workflow." + wf
	floor, err := e.watchCommands(ctx, scope)
	if err != nil {
		return nil, err
	}
	defer floor.stop()
	var delays, lasts, floors, inForce []time.Duration
	for round := range rounds {
		e.cfg.Progress("halt propagation", round, rounds)
		started.reset()
		interrupted.reset()
		if err := e.command(ctx, scope, emergency.ActionResume); err != nil {
			return nil, err
		}
		// A request that reached a worker before the resume did would be halted
		// at once, and never run.
		if err := e.awaitState(ctx, ids, scope, emergency.Active); err != nil {
			return nil, err
		}
		if err := e.submitRunning(ctx, wf, inFlight, started); err != nil {
			return nil, err
		}
		halt := nats.NewMsg(contract.Subjects{Prefix: contract.DefaultPrefix}.Emergency(scope))
		halt.Data, _ = json.Marshal(contract.EmergencyCommand{Action: emergency.ActionHalt, Reason: "flowbench", IssuedBy: "flowbench", IssuedAt: time.Now().UTC()})
		t0 := time.Now()
		ack, err := e.js.PublishMsg(ctx, halt)
		if err != nil {
			return nil, fmt.Errorf("publish the halt: %w", err)
		}
		seq := ack.Sequence
		if err := waitFor(ctx, time.Minute, "all executions interrupted", func() (bool, string) {
			n := len(interrupted.snapshot())
			return n >= inFlight, fmt.Sprintf("%d interrupted", n)
		}); err != nil {
			return nil, err
		}
		var last time.Duration
		for _, at := range interrupted.snapshot() {
			d := at.Sub(t0)
			delays = append(delays, d)
			last = max(last, d)
		}
		lasts = append(lasts, last)
		delivered, err := floor.wait(ctx, seq)
		if err != nil {
			return nil, err
		}
		floors = append(floors, delivered.Sub(t0))
		for _, id := range ids {
			at, err := e.appliedAt(ctx, id, scope, seq)
			if err != nil {
				return nil, err
			}
			inForce = append(inForce, at.Sub(t0))
		}
	}
	if err := e.command(ctx, scope, emergency.ActionResume); err != nil {
		return nil, err
	}
	e.cfg.Progress("halt propagation", rounds, rounds)
	sortDurations(delays)
	sortDurations(lasts)
	sortDurations(floors)
	sortDurations(inForce)
	return &Halt{Workers: workers, InFlight: inFlight, Rounds: rounds,
		InForceP50MS: percentile(inForce, 0.5), InForceP99MS: percentile(inForce, 0.99), InForceMaxMS: ms(inForce[len(inForce)-1]),
		P50MS: percentile(delays, 0.5), P99MS: percentile(delays, 0.99), MaxMS: ms(lasts[len(lasts)-1]),
		FloorP50MS: percentile(floors, 0.5), FloorP99MS: percentile(floors, 0.99)}, nil
}

// appliedAt returns when worker id applied the command stored at seq for scope,
// as its status reports.
func (e *env) appliedAt(ctx context.Context, id, scope string, seq uint64) (time.Time, error) {
	var at time.Time
	err := waitFor(ctx, 30*time.Second, "worker "+id+" applying the command stored at "+strconv.FormatUint(seq, 10), func() (bool, string) {
		board, err := e.workerBoard(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		st := board.Get(scope)
		at = st.AppliedAt
		return st.Seq >= seq && !at.IsZero(), fmt.Sprintf("%s at seq %d", st.State, st.Seq)
	})
	return at, err
}

// workerBoard asks worker id for its view of the emergency scopes.
func (e *env) workerBoard(ctx context.Context, id string) (emergency.Board, error) {
	st, err := e.client.WorkerStatus(ctx, "flow.workers."+id+".status")
	if err != nil {
		return nil, err
	}
	return st.Emergency, nil
}

// awaitState waits until each worker of ids reports scope in state.
func (e *env) awaitState(ctx context.Context, ids []string, scope, state string) error {
	for _, id := range ids {
		err := waitFor(ctx, 30*time.Second, "worker "+id+" applying the "+scope+" command", func() (bool, string) {
			board, err := e.workerBoard(ctx, id)
			if err != nil {
				return false, err.Error()
			}
			st := board.Get(scope)
			return st.State == state, fmt.Sprintf("%s at seq %d", st.State, st.Seq)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// commandWatch records when an ordered consumer of the emergency stream, as a
// worker's follower is, receives each command of a scope: the floor of halt
// propagation.
type commandWatch struct {
	mu   sync.Mutex
	at   map[uint64]time.Time
	wake chan struct{}
	stop func()
}

func (e *env) watchCommands(ctx context.Context, scope string) (*commandWatch, error) {
	stream, err := e.js.Stream(ctx, contract.StreamEmergency)
	if err != nil {
		return nil, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contract.Subjects{Prefix: contract.DefaultPrefix}.Emergency(scope)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, err
	}
	w := &commandWatch{at: map[uint64]time.Time{}, wake: make(chan struct{}, 1)}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.at[meta.Sequence.Stream] = now
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	w.stop = cc.Stop
	return w, nil
}

// wait returns when the command stored at seq was delivered.
func (w *commandWatch) wait(ctx context.Context, seq uint64) (time.Time, error) {
	deadline := time.After(time.Minute)
	for {
		w.mu.Lock()
		at, ok := w.at[seq]
		w.mu.Unlock()
		if ok {
			return at, nil
		}
		select {
		case <-w.wake:
		case <-deadline:
			return time.Time{}, fmt.Errorf("the halt stored at %d was not delivered to the floor watch within a minute", seq)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// submitRunning publishes n requests of workflow wf and waits until n of them have
// started a node, as started records.
func (e *env) submitRunning(ctx context.Context, wf string, n int, started *nodeEvents) error {
	run := time.Now().UnixNano()
	for i := range n {
		if _, err := e.client.Submit(ctx, &contract.Request{WorkflowID: wf, RequestID: fmt.Sprintf("%s-%d-%d", wf, run, i)}); err != nil {
			return err
		}
	}
	return waitFor(ctx, 2*time.Minute, "executions running", func() (bool, string) {
		k := len(started.snapshot())
		return k >= n, fmt.Sprintf("%d of %d running", k, n)
	})
}

// workerProcess starts a worker process and waits until it reports ready.
func (e *env) workerProcess(ctx context.Context, id string, args ...string) (*os.Process, error) {
	p := e.cfg.WorkerCommand(append([]string{"--worker-id", id, "--ack-wait", e.cfg.AckWait.String()}, args...)...)
	if p == nil {
		return nil, errors.New("cannot start a worker process")
	}
	err := waitFor(ctx, 30*time.Second, "worker "+id+" ready", func() (bool, string) {
		reply, err := e.nc.Request("flow.workers."+id+".status", nil, time.Second)
		if err != nil {
			return false, err.Error()
		}
		var st struct {
			Ready bool `json:"ready"`
		}
		_ = json.Unmarshal(reply.Data, &st)
		return st.Ready, string(reply.Data)
	})
	if err != nil {
		_ = p.Kill()
		_, _ = p.Wait()
		return nil, err
	}
	return p, nil
}

func stopProcess(p *os.Process) {
	_ = p.Kill()
	_, _ = p.Wait()
}

// recovery kills a worker process holding executions and measures the time until
// the last of them is resumed by another worker.
func (e *env) recovery(ctx context.Context) (*Recovery, error) {
	e.cfg.Progress("recovery after SIGKILL", 0, 1)
	victim, err := e.workerProcess(ctx, "victim", "--concurrency", "50")
	if err != nil {
		return nil, err
	}
	defer stopProcess(victim)
	wf := "bench-recover"
	if _, _, err := e.client.Deploy(ctx, []byte(longWorkflow(wf, "5s"))); err != nil {
		return nil, err
	}
	resumed, err := e.watchEvents(wf, contract.ExecutionStarted, func(ev *contract.Event) bool { return ev.Resumed })
	if err != nil {
		return nil, err
	}
	defer resumed.sub.Unsubscribe()
	started, err := e.watchEvents(wf, contract.NodeStarted, nil)
	if err != nil {
		return nil, err
	}
	defer started.sub.Unsubscribe()
	const n = 50
	if err := e.submitRunning(ctx, wf, n, started); err != nil {
		return nil, err
	}
	survivor, err := e.workerProcess(ctx, "survivor", "--concurrency", "50")
	if err != nil {
		return nil, err
	}
	defer stopProcess(survivor)
	t0 := time.Now()
	stopProcess(victim)
	if err := waitFor(ctx, 2*time.Minute, "executions resumed", func() (bool, string) {
		k := len(resumed.snapshot())
		return k >= n, fmt.Sprintf("%d resumed", k)
	}); err != nil {
		return nil, err
	}
	var last time.Duration
	for _, at := range resumed.snapshot() {
		last = max(last, at.Sub(t0))
	}
	e.cfg.Progress("recovery after SIGKILL", 1, 1)
	return &Recovery{AckWaitMS: ms(e.cfg.AckWait), Executions: n, RecoverMS: ms(last)}, nil
}

// memory reads a worker process's resident memory idle, then with inFlight
// executions running.
func (e *env) memory(ctx context.Context, inFlight int) (*Memory, error) {
	e.cfg.Progress("worker memory", 0, 2)
	p, err := e.workerProcess(ctx, "memory", "--concurrency", strconv.Itoa(inFlight))
	if err != nil {
		return nil, err
	}
	defer stopProcess(p)
	idle, err := rssMB(p.Pid)
	if err != nil {
		return nil, err
	}
	e.cfg.Progress("worker memory", 1, 2)
	wf := "bench-memory"
	if _, _, err := e.client.Deploy(ctx, []byte(longWorkflow(wf, "10m"))); err != nil {
		return nil, err
	}
	started, err := e.watchEvents(wf, contract.NodeStarted, nil)
	if err != nil {
		return nil, err
	}
	defer started.sub.Unsubscribe()
	if err := e.submitRunning(ctx, wf, inFlight, started); err != nil {
		return nil, err
	}
	busy, err := rssMB(p.Pid)
	if err != nil {
		return nil, err
	}
	// Let the executions go: halt their workflow, then lift the halt.
	if err := e.command(ctx, "workflow."+wf, emergency.ActionHalt); err != nil {
		return nil, err
	}
	if err := e.command(ctx, "workflow."+wf, emergency.ActionResume); err != nil {
		return nil, err
	}
	e.cfg.Progress("worker memory", 2, 2)
	return &Memory{IdleMB: idle, InFlight: inFlight, InFlightMB: busy}, nil
}

// rssMB reads a process's resident set size from /proc (Linux).
func rssMB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of process %d (Linux only): %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}
