package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/execution"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/metrics"
)

// Delays before a handed-back request is delivered again.
const (
	retryInfraDelay = 2 * time.Second // NATS was unreachable or a write failed
	dlqPayloadLimit = 4 * 1024
)

// delivery is one received request and what is known of it so far.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	req  *contract.Request // nil until decoded

	workflowID    string
	executionID   string
	correlationID string
	botID         string
	traceparent   string

	status    *contract.Status // nil when the execution has no status yet
	statusRev uint64
}

// handle runs one request from receipt to acknowledgement; see docs/contract.md, Guarantees.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) consumer.Outcome {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata")
		return consumer.Outcome{Decision: consumer.Term, Reason: "not a JetStream message"}
	}
	d := &delivery{msg: msg, meta: meta}
	d.workflowID, _, err = w.subjects.ParseExec(msg.Subject())
	if err != nil {
		d.workflowID = contract.NoBot // the subject cannot name a workflow; events need a valid token
	}
	d.executionID = w.fallbackExecutionID(meta)
	d.botID = contract.NoBot
	d.identify()
	if meta.NumDelivered > 1 {
		w.metrics.Redelivered()
	}

	if n := len(msg.Data()); n > w.cfg.MaxRequestBytes {
		return w.reject(w.logContext(ctx, d), d, contract.Reject(contract.KindOversized,
			"request is %d bytes, more than the limit of %d; send large data by reference, or raise --max-request-bytes", n, w.cfg.MaxRequestBytes))
	}
	req, err := w.subjects.DecodeRequest(msg.Subject(), msg.Data())
	if err != nil {
		var rej *contract.Rejection
		errors.As(err, &rej)
		return w.reject(w.logContext(ctx, d), d, rej)
	}
	d.req = req
	d.identify()
	ctx = w.logContext(ctx, d)

	// A first delivery goes straight to its claim, which is its duplicate check:
	// creating the status fails when the execution exists. A redelivery reads the
	// status first, to resume or to end the execution.
	if meta.NumDelivered > 1 {
		if out, done := w.readStatus(ctx, d); done {
			return out
		}
	}
	if int(meta.NumDelivered) > w.cfg.Consumer.MaxDeliver {
		return w.exhausted(ctx, d)
	}
	if err := w.awaitOperable(ctx, emergency.Scopes{BotID: req.BotID, StrategyID: req.StrategyID, WorkflowID: req.WorkflowID}); err != nil {
		var halt *contract.HaltError
		if errors.As(err, &halt) {
			return w.halted(ctx, d, halt)
		}
		return w.handBack(ctx, err)
	}
	// Checked after any hold: a request is never started late.
	if d.status == nil && req.NotAfter != nil && time.Now().After(*req.NotAfter) {
		return w.reject(ctx, d, contract.Reject(contract.KindStale,
			"request expired at %s (not_after) before a worker could start it; publish a fresh request", req.NotAfter.UTC().Format(time.RFC3339)))
	}
	return w.execute(ctx, d)
}

// readStatus reads the execution's status into d; done is true when the request
// is settled by it: its execution ended before, or another request owns it.
func (w *Worker) readStatus(ctx context.Context, d *delivery) (consumer.Outcome, bool) {
	var err error
	d.status, d.statusRev, err = w.execs.Status(ctx, d.workflowID, d.executionID)
	switch {
	case errors.Is(err, kvstate.ErrNotFound):
		d.status, d.statusRev = nil, 0
	case err != nil:
		return w.handBack(ctx, err), true
	case contract.IsTerminalStatus(d.status.Status):
		return w.finishedBefore(ctx, d), true
	case d.status.StreamSeq != 0 && d.status.StreamSeq != d.meta.Sequence.Stream:
		return w.duplicate(ctx, d), true
	}
	return consumer.Outcome{}, false
}

// duplicate acknowledges a request whose request id names an execution that
// another request (an earlier copy) owns and runs: running it too would do the
// work twice.
func (w *Worker) duplicate(ctx context.Context, d *delivery) consumer.Outcome {
	zerolog.Ctx(ctx).Info().Uint64("stream_seq", d.meta.Sequence.Stream).Uint64("owner_stream_seq", d.status.StreamSeq).
		Msg("duplicate of a request already running; acknowledged without running it")
	w.metrics.Ended(metrics.OutcomeDuplicate)
	return consumer.Outcome{Decision: consumer.Ack}
}

// awaitOperable returns nil when the scopes may operate, a *contract.HaltError when
// one is halted. While the emergency state is unconfirmed it waits, holding the
// request (heartbeats keep it), so that nothing starts and no delivery is spent.
func (w *Worker) awaitOperable(ctx context.Context, scopes emergency.Scopes) error {
	logged := false
	for {
		changed := w.ctrl.Changed()
		err := w.ctrl.CanOperate(scopes)
		if !errors.Is(err, emergency.ErrStale) {
			return err
		}
		if !logged {
			zerolog.Ctx(ctx).Warn().Msg("emergency state unconfirmed; holding the request until it is")
			logged = true
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-changed:
		}
	}
}

// logContext carries a logger with the execution's identity, as far as it is known.
func (w *Worker) logContext(ctx context.Context, d *delivery) context.Context {
	return w.log.With().Str("correlation_id", d.correlationID).Str("execution_id", d.executionID).
		Str("workflow_id", d.workflowID).Logger().WithContext(ctx)
}

// identify sets the execution's identity from the request, once decoded. The
// correlation id is the request's, else the Correlation-Id header's, else
// exec_<workflow_id>_<execution_id>, the same on every delivery.
func (d *delivery) identify() {
	h := d.msg.Headers()
	d.correlationID = h.Get(contract.HeaderCorrelationID)
	for _, name := range []string{contract.HeaderTraceparent, "Traceparent"} {
		if v := h.Get(name); contract.ValidTraceparent(v) {
			d.traceparent = v
		}
	}
	if d.req != nil {
		d.workflowID = d.req.WorkflowID
		if d.req.RequestID != "" {
			d.executionID = d.req.RequestID
		}
		if d.req.BotID != "" {
			d.botID = d.req.BotID
		}
		if d.req.CorrelationID != "" {
			d.correlationID = d.req.CorrelationID
		}
	}
	if d.correlationID == "" {
		d.correlationID = "exec_" + d.workflowID + "_" + d.executionID
	}
}

// fallbackExecutionID names the execution of a request without request_id, the same
// way on every delivery: the request's stream sequence, tagged with the stream's
// creation time so that a recreated stream does not reuse ids.
func (w *Worker) fallbackExecutionID(meta *jetstream.MsgMetadata) string {
	return "s" + w.execStreamTag + "-" + strconv.FormatUint(meta.Sequence.Stream, 10)
}

// execute claims the execution, runs it and persists its terminal state, all
// through the execution's owner: every write after the claim is fenced by it.
func (w *Worker) execute(ctx context.Context, d *delivery) consumer.Outcome {
	log := zerolog.Ctx(ctx)
	resume := d.status != nil
	var version uint64
	if resume {
		version = d.status.WorkflowVersion
	}
	plan, err := w.plan(ctx, d.req, version)
	if err != nil {
		var rej *contract.Rejection
		if errors.As(err, &rej) {
			return w.reject(ctx, d, rej)
		}
		return w.handBack(ctx, err)
	}

	now := time.Now().UTC()
	st := &contract.Status{
		ExecutionID: d.executionID, WorkflowID: d.workflowID, WorkflowVersion: plan.Version,
		RequestID: d.req.RequestID, BotID: d.req.BotID, StrategyID: d.req.StrategyID,
		CorrelationID: d.correlationID, Status: contract.StatusRunning,
		Attempt: int(d.meta.NumDelivered), WorkerID: w.cfg.WorkerID, StreamSeq: d.meta.Sequence.Stream,
		CreatedAt: &now, StartedAt: &now, UpdatedAt: now,
	}
	if resume && d.status.CreatedAt != nil {
		st.CreatedAt = d.status.CreatedAt
	}
	lastSeq, err := w.lastEventSeq(ctx, d)
	if err != nil {
		return w.handBack(ctx, err)
	}
	id := execution.Identity{
		ExecutionID: d.executionID, WorkflowID: d.workflowID, WorkflowVersion: plan.Version, BotID: d.botID,
		StrategyID: d.req.StrategyID, CorrelationID: d.correlationID, RequestID: d.req.RequestID, Traceparent: d.traceparent,
	}
	owner, err := w.execs.Claim(ctx, st, d.statusRev, id, lastSeq)
	if errors.Is(err, execution.ErrClaimed) && !resume {
		// A first delivery whose execution exists: a duplicate, a finished one, or
		// one this request owns already (its worker died): read it and decide.
		if out, done := w.readStatus(ctx, d); done {
			return out
		}
		if d.status == nil {
			return w.handBack(ctx, errors.New("the execution's status was created, then vanished; trying again"))
		}
		return w.execute(ctx, d)
	}
	if errors.Is(err, execution.ErrClaimed) {
		return w.claimLost(ctx, d)
	}
	if err != nil {
		return w.handBack(ctx, err)
	}
	if !resume {
		// Known before the terminal status is written: pipelined with the run.
		if err := owner.SetLatest(); err != nil {
			return w.handBack(ctx, err)
		}
	}

	x := &executor.Execution{
		ID: d.executionID, RequestID: d.req.RequestID, WorkflowID: d.workflowID, WorkflowVersion: plan.Version,
		BotID: d.req.BotID, StrategyID: d.req.StrategyID, CorrelationID: d.correlationID, Traceparent: d.traceparent,
		Inputs: d.req.Inputs, Plan: plan, Resume: resume, NotAfter: d.req.NotAfter,
	}
	if x.Inputs == nil {
		x.Inputs = map[string]any{}
	}
	log.Debug().Bool("resumed", resume).Uint64("attempt", d.meta.NumDelivered).Uint64("claim", owner.Claim()).Msg("execution started")
	w.metrics.ExecutionStarted()
	outcome := metrics.OutcomeHandedBack
	defer func() { w.metrics.ExecutionEnded(outcome, time.Since(now)) }()
	out := w.exec.Run(ctx, x, owner)
	if out.Interrupted() {
		return w.handBack(ctx, out.Cause)
	}

	ev := contract.Event{Type: terminalEventType(out.Status), Error: out.Error}
	if out.Status == contract.StatusCompleted {
		ev.Outputs = flattenOutputs(out.Outputs)
	}
	if out.FailedNode != "" {
		ev.NodeID = out.FailedNode
	}
	result := &contract.Result{
		ExecutionID: d.executionID, WorkflowID: d.workflowID, Status: out.Status,
		Outputs: out.Outputs, Error: out.Error, FailedNode: out.FailedNode,
	}
	finished := time.Now().UTC()
	st.Status, st.Error, st.UpdatedAt, st.FinishedAt = out.Status, out.Error, finished, &finished
	if err := owner.Finish(ctx, result, st, ev); err != nil {
		return w.handBack(ctx, err) // the redelivery finds the terminal status and publishes the event
	}
	outcome = out.Status
	ev2 := log.Info().Str("status", out.Status).Dur("duration", finished.Sub(now))
	if out.Error != nil {
		ev2 = ev2.Str("error_kind", out.Error.Kind).Str("error", out.Error.Message)
	}
	ev2.Msg("execution finished")
	return consumer.Outcome{Decision: consumer.Ack}
}

// plan compiles the request's inline workflow, if this worker's policy lets it
// run, or loads the deployed one.
func (w *Worker) plan(ctx context.Context, req *contract.Request, version uint64) (*executor.Plan, error) {
	if len(req.Workflow) > 0 {
		return w.plans.inline(req.Workflow, req.WorkflowID)
	}
	return w.plans.deployed(ctx, req.WorkflowID, version)
}

// finishedBefore acknowledges a request whose execution already has a terminal
// status, publishing its terminal event if a crash lost it.
func (w *Worker) finishedBefore(ctx context.Context, d *delivery) consumer.Outcome {
	ev := d.status.TerminalEvent
	if ev != nil {
		subject := w.subjects.Event(ev.BotID, ev.WorkflowID, ev.ExecutionID, ev.Type)
		_, err := w.events.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			err = w.pub.PublishEvent(ctx, ev)
		}
		if err != nil {
			return w.handBack(ctx, err)
		}
	}
	zerolog.Ctx(ctx).Info().Str("status", d.status.Status).Uint64("attempt", d.meta.NumDelivered).
		Msg("request already executed; acknowledged without running it again")
	return consumer.Outcome{Decision: consumer.Ack}
}

// lastEventSeq returns the sequence of the execution's last stored event, so that a
// resumed execution numbers its events after it.
func (w *Worker) lastEventSeq(ctx context.Context, d *delivery) (uint64, error) {
	if d.status == nil {
		return 0, nil
	}
	raw, err := w.events.GetLastMsgForSubject(ctx, w.subjects.EventFilter(d.botID, d.workflowID, d.executionID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read last event of %s: %w", d.executionID, err)
	}
	var ev contract.Event
	if err := json.Unmarshal(raw.Data, &ev); err != nil {
		return 0, fmt.Errorf("decode last event of %s: %w", d.executionID, err)
	}
	return ev.Seq, nil
}

// claimLost handles a claim that lost its compare-and-set: the status changed since
// it was read (or, on a first delivery, exists).
func (w *Worker) claimLost(ctx context.Context, d *delivery) consumer.Outcome {
	st, rev, err := w.execs.Status(ctx, d.workflowID, d.executionID)
	if err != nil {
		return w.handBack(ctx, err)
	}
	d.status, d.statusRev = st, rev
	switch {
	case contract.IsTerminalStatus(st.Status):
		return w.finishedBefore(ctx, d)
	case st.StreamSeq != d.meta.Sequence.Stream:
		return w.duplicate(ctx, d)
	}
	zerolog.Ctx(ctx).Warn().Str("owner", st.WorkerID).Msg("another worker claimed this request's execution; leaving it to it")
	return consumer.Outcome{Decision: consumer.Abandon}
}

// handBack returns the request for a later delivery: at once when the worker is
// shutting down, after a short delay when NATS was unreachable. A request this
// worker no longer holds (its lease lapsed, or another worker took the execution
// over) is left alone.
func (w *Worker) handBack(ctx context.Context, cause error) consumer.Outcome {
	log := zerolog.Ctx(ctx)
	if errors.Is(cause, execution.ErrLostOwnership) || errors.Is(cause, consumer.ErrLeaseLost) || errors.Is(context.Cause(ctx), consumer.ErrLeaseLost) {
		log.Warn().Err(cause).Msg("execution stopped: this worker no longer holds the request")
		return consumer.Outcome{Decision: consumer.Abandon}
	}
	if ctx.Err() != nil {
		log.Info().Err(context.Cause(ctx)).Msg("execution interrupted; handing the request back")
		return consumer.Outcome{Decision: consumer.Nak}
	}
	log.Warn().Err(cause).Dur("retry_in", retryInfraDelay).Msg("execution could not be completed; handing the request back")
	return consumer.Outcome{Decision: consumer.Nak, Delay: retryInfraDelay}
}

func terminalEventType(status string) string {
	switch status {
	case contract.StatusCompleted:
		return contract.ExecutionCompleted
	case contract.StatusHalted:
		return contract.ExecutionHalted
	}
	return contract.ExecutionFailed
}

// flattenOutputs turns per-node outputs into an event's outputs object.
func flattenOutputs(outputs map[string]map[string]any) map[string]any {
	out := make(map[string]any, len(outputs))
	for id, o := range outputs {
		out[id] = o
	}
	return out
}
