// Package executor runs a workflow's DAG: a node starts when all its dependencies
// have completed, independent nodes run concurrently (bounded), every node but a
// pure one runs under its timeout (provider nodes through the resilience chain:
// timeout per attempt, retries, circuit breaker), every step is published as a lifecycle
// event, and finished nodes are checkpointed where a resume needs them: a node
// that is not pure as it finishes, a pure one (nodes.Pure) only once a node that
// is not pure starts, so that it resumes after consistent predecessors; an
// execution that ends drops the checkpoints it kept back. It writes nothing
// itself: it asks the execution's State (its owner), which pipelines the writes
// and confirms them all before a node with side effects starts.
package executor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/workflow"
)

// DefaultMaxParallelNodes bounds the nodes of one execution that run at once.
const DefaultMaxParallelNodes = 8

// DefaultMaxOutputBytes bounds the JSON outputs of one node, well below the
// server's max payload (1 MiB by default): the outputs travel in a checkpoint and
// an event, and an execution's outputs, up to ExecutionOutputFactor times this,
// in its result, status and terminal event.
const DefaultMaxOutputBytes = 256 * 1024

// ExecutionOutputFactor bounds the outputs of all the nodes of one execution, as a
// multiple of the per-node bound.
const ExecutionOutputFactor = 3

// ErrWorkflowTimeout is the cause of an execution stopped by its workflow timeout.
var ErrWorkflowTimeout = errors.New("workflow timeout exceeded")

// KindPanic is the error kind of a node that panicked.
const KindPanic = "panic"

// Execution is one run of a plan.
type Execution struct {
	ID              string
	RequestID       string
	WorkflowID      string
	WorkflowVersion uint64
	BotID           string
	StrategyID      string
	CorrelationID   string
	// Traceparent is the request's W3C trace context, carried onto events and orders.
	Traceparent string
	Inputs      map[string]any
	Plan        *Plan
	// Resume restores the checkpoints of an earlier attempt instead of rerunning those nodes.
	Resume bool
	// NotAfter, when set, is the request's not_after: no provider node starts later.
	NotAfter *time.Time
}

// BotToken is the bot id as a subject token: contract.NoBot when there is none.
func (x *Execution) BotToken() string {
	if x.BotID == "" {
		return contract.NoBot
	}
	return x.BotID
}

// State is the durable state of one execution, owned by the worker that claimed
// it (execution.Owner). The executor asks it and never writes storage itself.
type State interface {
	// Checkpoints returns the nodes that earlier attempts finished, by node id.
	Checkpoints(ctx context.Context) (map[string]*contract.Checkpoint, error)
	// Checkpoint stores a finished node and Emit publishes an event (numbered by
	// the state), both without waiting; each returns the error of an earlier write
	// that failed, and then the execution stops.
	Checkpoint(cp *contract.Checkpoint) error
	Emit(ev contract.Event) error
	// Confirm waits until every write so far is stored and checks that the
	// execution is still owned: asked before nodes with side effects start.
	Confirm(ctx context.Context) error
}

// Guard lets the emergency controller stop executions. It may be nil.
type Guard interface {
	// CanOperate is asked before each node; sideEffects says the node calls an
	// outside service (a provider node). It returns a *contract.HaltError when x
	// must stop halted, a *nodes.Error when this node may not start (it fails with
	// that error's kind), and any other error when the execution must stop without
	// a terminal state (it is interrupted).
	CanOperate(ctx context.Context, x *Execution, sideEffects bool) error
	// Watch cancels x with a *contract.HaltError as cause when a halt covering it
	// arrives, until stop is called.
	Watch(x *Execution, cancel context.CancelCauseFunc) (stop func())
}

// Outcome is how an execution ended.
type Outcome struct {
	// Status is completed, failed or halted; empty when the execution was interrupted
	// before reaching a terminal state and must be handed back for a later attempt.
	Status     string
	Error      *contract.Error
	FailedNode string
	Outputs    map[string]map[string]any
	// Cause says why an interrupted execution stopped.
	Cause error
}

// Interrupted reports whether the execution stopped without a terminal state.
func (o Outcome) Interrupted() bool { return o.Status == "" }

// Config tunes an Executor.
type Config struct {
	// MaxParallelNodes bounds the nodes of one execution that run at once; default 8.
	MaxParallelNodes int
	// Resilience runs provider nodes (runners that implement nodes.Provider); its
	// settings give the default node timeout and retries. Nil runs every node
	// but a pure one with its timeout only (default workflow.DefaultNodeTimeout):
	// no retry, no breaker. The worker always sets it.
	Resilience *resilience.Chain
	// Observer, when set, is told how each node ended, for metrics.
	Observer Observer
	// MaxOutputBytes bounds each node's JSON outputs (and an execution's, at
	// ExecutionOutputFactor times it); a node over it fails with bad_response.
	// Default DefaultMaxOutputBytes.
	MaxOutputBytes int
}

// Observer is told how each node ended (completed or failed) and how long it took,
// and of each retried attempt. It must not block.
type Observer interface {
	NodeFinished(nodeType, outcome string, d time.Duration)
	NodeRetried(nodeType string)
}

// Executor runs executions. It is safe for concurrent use.
type Executor struct {
	guard       Guard
	maxParallel int
	maxOutput   int
	observer    Observer
	chain       *resilience.Chain
	timeout     time.Duration // default node timeout
	retry       resilience.RetrySettings
}

// New returns an executor. guard may be nil.
func New(guard Guard, cfg Config) *Executor {
	if cfg.MaxParallelNodes <= 0 {
		cfg.MaxParallelNodes = DefaultMaxParallelNodes
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = DefaultMaxOutputBytes
	}
	e := &Executor{guard: guard, maxParallel: cfg.MaxParallelNodes, maxOutput: cfg.MaxOutputBytes, chain: cfg.Resilience, timeout: workflow.DefaultNodeTimeout, observer: cfg.Observer}
	if e.chain != nil {
		e.timeout, e.retry = e.chain.Settings().Timeout, e.chain.Settings().Retry
	}
	return e
}

type nodeResult struct {
	idx      int
	res      nodes.Result
	err      error
	errKind  string
	attempt  int
	duration time.Duration
}

// run holds the state of one execution; only the coordinating goroutine touches
// it, except st and log, which node goroutines use to report retries.
type run struct {
	e     *Executor
	x     *Execution
	st    State
	marks nodes.OrderMarks // st, when it keeps order marks
	log   *zerolog.Logger
	// started is when this attempt started; priorRun is how long earlier attempts
	// ran, as far as their checkpoints tell.
	started     time.Time
	priorRun    time.Duration
	outputBytes int
	waiting     []int    // dependencies not yet finished, per node
	blocked     []string // why a node will be skipped, per node
	outputs     map[string]map[string]any
	ready       []int
	running     int
	results     chan nodeResult
	inline      nodeResult // a node startReady ran itself, when ranInline
	ranInline   bool
	// kept holds the checkpoints of finished pure nodes, not yet written: see
	// record and flush.
	kept []*contract.Checkpoint
}

// Run executes x, writing its checkpoints and events through st, and returns how
// it ended. ctx bounds every I/O of the execution: when it ends (shutdown, lost
// broker, lost ownership), the execution is interrupted, never failed. A halt
// (through the Guard) or the workflow timeout ends it halted or failed. The
// workflow timeout counts the time the execution actually ran: this attempt's and,
// as recorded in their checkpoints, the earlier ones'; time spent waiting for a
// redelivery after a crash is not counted. Run does not write the terminal state.
func (e *Executor) Run(ctx context.Context, x *Execution, st State) Outcome {
	nodesCount := len(x.Plan.nodes)
	r := &run{
		e: e, x: x, st: st, log: zerolog.Ctx(ctx), started: time.Now(),
		waiting: make([]int, nodesCount),
		blocked: make([]string, nodesCount),
		outputs: make(map[string]map[string]any, nodesCount),
		results: make(chan nodeResult),
	}
	r.marks, _ = st.(nodes.OrderMarks)
	for i, pn := range x.Plan.nodes {
		r.waiting[i] = len(pn.deps)
		if len(pn.deps) == 0 {
			r.ready = append(r.ready, i)
		}
	}

	started := contract.Event{Type: contract.ExecutionStarted, Inputs: x.Inputs}
	if x.Resume {
		restored, err := r.restore(ctx)
		if err != nil {
			return Outcome{Cause: err}
		}
		started.Resumed = true
		started.RestoredNodes = restored
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(context.Canceled)
	deadline := r.started.Add(x.Plan.Def.TimeoutOrDefault() - r.priorRun)
	runCtx, cancelTimeout := context.WithDeadlineCause(runCtx, deadline, ErrWorkflowTimeout)
	defer cancelTimeout()
	if e.guard != nil {
		stop := e.guard.Watch(x, cancel)
		defer stop()
	}
	if err := st.Emit(started); err != nil {
		return Outcome{Cause: err}
	}
	return r.loop(ctx, runCtx, cancel)
}

// ran is how long the execution has run: earlier attempts and this one.
func (r *run) ran() time.Duration { return r.priorRun + time.Since(r.started) }

// restore applies the checkpoints of an earlier attempt, in dependency order, and
// returns the ids of the nodes restored.
func (r *run) restore(ctx context.Context) ([]string, error) {
	cps, err := r.st.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("load checkpoints: %w", err)
	}
	for _, cp := range cps {
		r.priorRun = max(r.priorRun, time.Duration(cp.RunMS)*time.Millisecond)
	}
	var restored []string
	for len(r.ready) > 0 {
		progressed := false
		for k, idx := range r.ready {
			cp, ok := cps[r.x.Plan.nodes[idx].def.ID]
			if !ok {
				continue
			}
			r.ready = append(r.ready[:k], r.ready[k+1:]...)
			restored = append(restored, cp.NodeID)
			r.apply(idx, cp)
			progressed = true
			break
		}
		if !progressed {
			break
		}
	}
	return restored, nil
}

// apply records a finished node and releases its dependents, without events.
func (r *run) apply(idx int, cp *contract.Checkpoint) {
	pn := r.x.Plan.nodes[idx]
	reason := ""
	switch cp.State {
	case contract.NodeStateCompleted:
		r.outputs[pn.def.ID] = cp.Outputs
		if data, err := json.Marshal(cp.Outputs); err == nil {
			r.outputBytes += len(data) // they count toward the execution's bound
		}
		reason = cp.Reason
	case contract.NodeStateFailed:
		reason = fmt.Sprintf("dependency %s failed", pn.def.ID)
	default: // skipped
		reason = fmt.Sprintf("dependency %s was skipped", pn.def.ID)
	}
	r.release(idx, reason)
}

// loop schedules ready nodes and handles their results until the DAG is done or
// the execution stops.
func (r *run) loop(ctx, runCtx context.Context, cancel context.CancelCauseFunc) Outcome {
	var failure *Outcome
	for {
		if failure == nil {
			if err := r.startReady(ctx, runCtx); err != nil {
				failure = r.stopWith(err)
				cancel(context.Canceled)
			}
		}
		if r.running == 0 {
			break // startReady emptied the ready list, or the execution stopped
		}
		var res nodeResult
		if r.ranInline {
			res, r.ranInline = r.inline, false
		} else {
			res = <-r.results
		}
		r.running--
		if failure != nil {
			r.drain(ctx, runCtx, res, failure)
			continue
		}
		if err := r.finish(ctx, runCtx, res); err != nil {
			failure = r.stopWith(err)
			cancel(context.Canceled)
			if res.err != nil && failure.FailedNode == "" {
				r.drain(ctx, runCtx, res, failure) // the node was stopped by a halt or the workflow timeout
			}
		}
	}
	if failure != nil {
		return *failure
	}
	return Outcome{Status: contract.StatusCompleted, Outputs: r.outputs}
}

// drain records a node that was still running when the execution stopped: one that
// completed anyway is checkpointed as usual; one that was stopped gets node_failed
// saying why, unless the execution was interrupted and will resume elsewhere.
func (r *run) drain(ctx, runCtx context.Context, res nodeResult, failure *Outcome) {
	pn := r.x.Plan.nodes[res.idx]
	if res.err == nil {
		if err := r.finish(ctx, runCtx, res); err != nil {
			r.log.Warn().Err(err).Str("node_id", pn.def.ID).Msg("record node that completed after the execution stopped")
		}
		return
	}
	if failure.Interrupted() {
		return
	}
	stopped := &contract.Error{Kind: failure.Error.Kind, Message: failure.Error.Message}
	if failure.FailedNode != "" {
		stopped = &contract.Error{Kind: contract.KindCanceled, Message: "stopped because node " + failure.FailedNode + " failed"}
	}
	durationMS := res.duration.Milliseconds()
	if err := r.st.Emit(contract.Event{Type: contract.NodeFailed, NodeID: pn.def.ID, NodeType: pn.def.Type, Attempt: res.attempt, DurationMS: &durationMS, Error: stopped}); err != nil {
		r.log.Warn().Err(err).Str("node_id", pn.def.ID).Msg("publish node_failed of a stopped node")
	}
}

// startReady skips or starts ready nodes, up to the parallelism bound. Before the
// first node with side effects it confirms, once for all the nodes it starts,
// that every write so far is stored and the execution is still owned.
func (r *run) startReady(ctx, runCtx context.Context) error {
	confirmed := false
	for len(r.ready) > 0 && r.running < r.e.maxParallel {
		idx := r.ready[0]
		r.ready = r.ready[1:]
		pn := r.x.Plan.nodes[idx]
		if reason := r.blocked[idx]; reason != "" {
			if err := r.skip(ctx, idx, reason); err != nil {
				return err
			}
			continue
		}
		if err := runCtx.Err(); err != nil {
			return context.Cause(runCtx)
		}
		if r.e.guard != nil {
			err := r.e.guard.CanOperate(runCtx, r.x, pn.provider != nil)
			var refused *nodes.Error
			if errors.As(err, &refused) { // this node may not start: it fails
				if err := r.finish(ctx, runCtx, nodeResult{idx: idx, err: err, errKind: refused.Kind}); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
		}
		if !pn.pure {
			if err := r.flush(); err != nil {
				return err
			}
		}
		if pn.provider != nil && !confirmed {
			if err := r.st.Confirm(runCtx); err != nil {
				if runCtx.Err() != nil {
					return context.Cause(runCtx)
				}
				return err
			}
			confirmed = true
		}
		if err := r.st.Emit(contract.Event{Type: contract.NodeStarted, NodeID: pn.def.ID, NodeType: pn.def.Type, Attempt: 1}); err != nil {
			return err
		}
		r.running++
		in := nodes.Input{Env: r.env(pn), Marks: r.marks}
		if pn.provider == nil && r.running == 1 && len(r.ready) == 0 {
			// The only node to run now, and one without side effects (a chain of
			// transforms, say): it runs here, not in a goroutine of its own; a halt
			// or the workflow timeout still cancels it through runCtx.
			r.inline, r.ranInline = r.e.runNode(runCtx, idx, pn, in, nil, nil), true
			return nil
		}
		go func() {
			r.results <- r.e.runNode(runCtx, idx, pn, in, r.retried(pn), r.admission(pn))
		}()
	}
	return nil
}

// env builds what a node sees: the inputs and the outputs of the nodes before it.
func (r *run) env(pn *planNode) *nodes.Env {
	before := make(map[string]map[string]any, len(pn.ancestors))
	for _, a := range pn.ancestors {
		id := r.x.Plan.nodes[a].def.ID
		if out, ok := r.outputs[id]; ok {
			before[id] = out
		}
	}
	return &nodes.Env{
		Inputs: r.x.Inputs,
		Nodes:  before,
		Execution: nodes.Execution{
			ID: r.x.ID, WorkflowID: r.x.WorkflowID, BotID: r.x.BotID,
			StrategyID: r.x.StrategyID, CorrelationID: r.x.CorrelationID, Traceparent: r.x.Traceparent,
		},
	}
}

// runNode runs one node: a provider node through the resilience chain, calling
// onRetry before each retry and drawing admit from its rate limits; a pure node
// once, as it is (it only evaluates expressions, which a timeout could not
// interrupt); any other node once, under its timeout.
func (e *Executor) runNode(ctx context.Context, idx int, pn *planNode, in nodes.Input, onRetry func(int, time.Duration, error), admit *resilience.Admission) nodeResult {
	start := time.Now()
	timeout := cmp.Or(pn.timeout, e.timeout)
	var res nodes.Result
	op := func(ctx context.Context, attempt int) error {
		var err error
		attemptIn := in
		attemptIn.Attempt = attempt
		res, err = runGuarded(ctx, pn.runner, attemptIn)
		return err
	}
	attempts := 1
	var err error
	if pn.provider != nil && e.chain != nil {
		call := resilience.Call{Provider: pn.provider.Provider(), Timeout: timeout, Retry: e.retry.Override(pn.retry), OnRetry: onRetry, Admission: admit}
		attempts, err = e.chain.Do(ctx, call, op)
	} else if pn.pure {
		err = op(ctx, 1)
	} else {
		err = resilience.WithTimeout(ctx, timeout, func(ctx context.Context) error { return op(ctx, 1) })
	}
	out := nodeResult{idx: idx, res: res, err: err, attempt: attempts, duration: time.Since(start)}
	if err != nil {
		out.res, out.errKind = nodes.Result{}, errorKind(err)
	}
	return out
}

// runGuarded runs a node, turning a panic into a node failure: a faulty node must
// not take the worker, and every execution on it, down.
func runGuarded(ctx context.Context, r nodes.Runner, in nodes.Input) (res nodes.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = nodes.Permanent(KindPanic, fmt.Errorf("node panicked: %v", p))
		}
	}()
	return r.Run(ctx, in)
}

// errorKind is the kind of a node failure: the chain's own, else the node's.
func errorKind(err error) string {
	switch {
	case errors.Is(err, resilience.ErrCircuitOpen):
		return contract.KindCircuitOpen
	case errors.Is(err, resilience.ErrAttemptTimeout):
		return contract.KindTimeout
	case errors.Is(err, resilience.ErrRateLimited):
		return contract.KindRateLimited
	}
	return nodes.KindOf(err)
}

// retried returns the listener of a provider node's retries: it publishes
// node_retrying and logs. It runs in the node's goroutine, so it only uses the
// run's state (safe for concurrent use) and logger.
func (r *run) retried(pn *planNode) func(int, time.Duration, error) {
	if pn.provider == nil {
		return nil
	}
	return func(attempt int, delay time.Duration, err error) {
		if r.e.observer != nil {
			r.e.observer.NodeRetried(pn.def.Type)
		}
		delayMS := delay.Milliseconds()
		kind := errorKind(err)
		r.log.Info().Str("node_id", pn.def.ID).Str("provider", pn.provider.Provider()).Int("attempt", attempt).
			Dur("delay", delay).Str("error_kind", kind).Err(err).Msg("node retrying")
		ev := contract.Event{Type: contract.NodeRetrying, NodeID: pn.def.ID, NodeType: pn.def.Type, Attempt: attempt,
			DelayMS: &delayMS, Error: &contract.Error{Kind: kind, Message: err.Error()}}
		if err := r.st.Emit(ev); err != nil {
			r.log.Warn().Err(err).Str("node_id", pn.def.ID).Msg("publish node_retrying")
		}
	}
}

// finish checkpoints a node's result, publishes its event and releases its dependents.
// It returns an error when the execution must stop.
func (r *run) finish(ctx, runCtx context.Context, res nodeResult) error {
	pn := r.x.Plan.nodes[res.idx]
	id := pn.def.ID
	durationMS := res.duration.Milliseconds()
	if res.err == nil {
		if err := r.checkSize(res.res.Outputs); err != nil {
			res.res, res.err, res.errKind = nodes.Result{}, err, nodes.KindOf(err)
		}
	}
	if r.e.observer != nil {
		outcome := contract.NodeStateCompleted
		if res.err != nil {
			outcome = contract.NodeStateFailed
		}
		r.e.observer.NodeFinished(pn.def.Type, outcome, res.duration)
	}
	if res.err != nil {
		if runCtx.Err() != nil {
			return context.Cause(runCtx) // halted, timed out or interrupted: not this node's fault
		}
		if errors.Is(res.err, nodes.ErrStopped) {
			return res.err // the execution is no longer this worker's: interrupted
		}
		nodeErr := &contract.Error{Kind: res.errKind, Message: res.err.Error()}
		r.log.Warn().Str("node_id", id).Str("error_kind", nodeErr.Kind).Err(res.err).Msg("node failed")
		if !pn.def.ContinueOnError {
			if err := r.st.Emit(contract.Event{Type: contract.NodeFailed, NodeID: id, NodeType: pn.def.Type, Attempt: res.attempt, DurationMS: &durationMS, Error: nodeErr}); err != nil {
				return err
			}
			return &nodeFailure{node: id, err: nodeErr}
		}
		cp := &contract.Checkpoint{NodeID: id, State: contract.NodeStateFailed, Error: nodeErr, Attempt: res.attempt}
		if err := r.record(pn, cp, contract.Event{Type: contract.NodeFailed, NodeID: id, NodeType: pn.def.Type, Attempt: res.attempt, DurationMS: &durationMS, Error: nodeErr, Reason: "continue_on_error: the execution goes on"}); err != nil {
			return err
		}
		r.release(res.idx, fmt.Sprintf("dependency %s failed", id))
		return nil
	}
	cp := &contract.Checkpoint{NodeID: id, State: contract.NodeStateCompleted, Outputs: res.res.Outputs, Reason: res.res.Skip, Attempt: res.attempt}
	if err := r.record(pn, cp, contract.Event{Type: contract.NodeCompleted, NodeID: id, NodeType: pn.def.Type, Attempt: res.attempt, DurationMS: &durationMS, Outputs: res.res.Outputs}); err != nil {
		return err
	}
	r.outputs[id] = res.res.Outputs
	r.release(res.idx, res.res.Skip)
	return nil
}

// record checkpoints a finished node, with the time the execution has run so
// far, and publishes its event, both pipelined: the nodes after it start at
// once, and the state confirms both before any side effect. A pure node's
// checkpoint is kept back (see flush). Should the worker die before a checkpoint
// is stored, the node runs again on resume, as a node that had not finished would.
func (r *run) record(pn *planNode, cp *contract.Checkpoint, ev contract.Event) error {
	cp.FinishedAt = time.Now().UTC()
	cp.RunMS = r.ran().Milliseconds()
	if pn.pure {
		r.kept = append(r.kept, cp)
	} else if err := r.st.Checkpoint(cp); err != nil {
		return fmt.Errorf("checkpoint node %s: %w", cp.NodeID, err)
	}
	return r.st.Emit(ev)
}

// flush writes the checkpoints kept back, asked before a node that is not pure
// starts: a resume after that node restores the predecessors whose outputs it
// used, rather than computing them again, perhaps differently (now()). Pure
// nodes are cheap to run again, so until then, and when the execution ends, their
// checkpoints are not needed: a resume runs them again, and the result
// supersedes them.
func (r *run) flush() error {
	for i, cp := range r.kept {
		if err := r.st.Checkpoint(cp); err != nil {
			return fmt.Errorf("checkpoint node %s: %w", cp.NodeID, err)
		}
		r.kept[i] = nil
	}
	r.kept = r.kept[:0]
	return nil
}

// checkSize fails a node whose outputs are over the bound, or would take the
// execution's outputs over theirs: they could not be stored or published. Such a
// node is not retried: its answer would be as large again.
func (r *run) checkSize(outputs map[string]any) error {
	data, err := json.Marshal(outputs)
	if err != nil {
		return nodes.Permanent(nodes.KindBadResponse, fmt.Errorf("outputs cannot be encoded as JSON: %v", err))
	}
	n := len(data)
	if n > r.e.maxOutput {
		return nodes.Permanent(nodes.KindBadResponse, fmt.Errorf(
			"outputs are %d bytes, more than the limit of %d; select fewer fields (outputs), ask the provider for less, or raise --max-output-bytes", n, r.e.maxOutput))
	}
	if total := r.outputBytes + n; total > ExecutionOutputFactor*r.e.maxOutput {
		return nodes.Permanent(nodes.KindBadResponse, fmt.Errorf(
			"the execution's outputs would be %d bytes, more than the limit of %d (%d times --max-output-bytes); select fewer fields in its nodes' outputs",
			total, ExecutionOutputFactor*r.e.maxOutput, ExecutionOutputFactor))
	}
	r.outputBytes += n
	return nil
}

// skip marks a node skipped, checkpoints it, publishes node_skipped and releases its dependents.
func (r *run) skip(ctx context.Context, idx int, reason string) error {
	pn := r.x.Plan.nodes[idx]
	cp := &contract.Checkpoint{NodeID: pn.def.ID, State: contract.NodeStateSkipped, Reason: reason}
	if err := r.record(pn, cp, contract.Event{Type: contract.NodeSkipped, NodeID: pn.def.ID, NodeType: pn.def.Type, Reason: reason}); err != nil {
		return err
	}
	r.release(idx, fmt.Sprintf("dependency %s was skipped", pn.def.ID))
	return nil
}

// release marks a node finished; a non-empty block reason skips its dependents.
func (r *run) release(idx int, block string) {
	for _, d := range r.x.Plan.nodes[idx].dependents {
		if block != "" && r.blocked[d] == "" {
			r.blocked[d] = block
		}
		r.waiting[d]--
		if r.waiting[d] == 0 {
			r.ready = append(r.ready, d)
		}
	}
}

// nodeFailure is a node that failed without continue_on_error.
type nodeFailure struct {
	node string
	err  *contract.Error
}

func (f *nodeFailure) Error() string { return "node " + f.node + ": " + f.err.Message }

// stopWith turns the error that stopped the loop into an outcome.
func (r *run) stopWith(err error) *Outcome {
	var nf *nodeFailure
	var halt *contract.HaltError
	switch {
	case errors.As(err, &nf):
		return &Outcome{Status: contract.StatusFailed, Error: nf.err, FailedNode: nf.node, Outputs: r.outputs}
	case errors.As(err, &halt):
		return &Outcome{Status: contract.StatusHalted, Error: &contract.Error{Kind: contract.KindHalted, Message: halt.Error()}, Outputs: r.outputs}
	case errors.Is(err, ErrWorkflowTimeout):
		return &Outcome{Status: contract.StatusFailed, Outputs: r.outputs, Error: &contract.Error{
			Kind:    contract.KindTimeout,
			Message: fmt.Sprintf("workflow timed out after %s; raise the workflow timeout or speed up its nodes", r.x.Plan.Def.TimeoutOrDefault()),
		}}
	}
	return &Outcome{Cause: err}
}
