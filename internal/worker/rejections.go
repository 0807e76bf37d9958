package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/execution"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/metrics"
)

// reject ends a request that can never run: an execution_rejected event, a dead
// letter with the reason, a failed status when the request names a valid execution,
// then an ack. Nothing is lost: the request itself is in the dead letter.
func (w *Worker) reject(ctx context.Context, d *delivery, rej *contract.Rejection) consumer.Outcome {
	zerolog.Ctx(ctx).Warn().Str("error_kind", rej.Kind).Str("reason", rej.Reason).Uint64("stream_seq", d.meta.Sequence.Stream).Msg("request rejected")
	return w.end(ctx, d, ending{event: contract.ExecutionRejected, status: contract.StatusFailed, outcome: metrics.OutcomeRejected,
		cause: &contract.Error{Kind: rej.Kind, Message: rej.Reason}, deadLetter: true})
}

// exhausted ends a request delivered more than MaxDeliver times (its workers kept
// dying or failing to persist): dead letter, execution_failed, failed status, ack.
func (w *Worker) exhausted(ctx context.Context, d *delivery) consumer.Outcome {
	reason := fmt.Sprintf("request was delivered %d times without reaching a terminal state (max deliver %d); see the execution's events for what its attempts did",
		d.meta.NumDelivered-1, w.cfg.Consumer.MaxDeliver)
	zerolog.Ctx(ctx).Error().Uint64("deliveries", d.meta.NumDelivered-1).Msg("request out of deliveries, dead-lettered")
	return w.end(ctx, d, ending{event: contract.ExecutionFailed, status: contract.StatusFailed, outcome: metrics.OutcomeFailed,
		cause: &contract.Error{Kind: contract.KindMaxDeliveries, Message: reason}, deadLetter: true})
}

// halted ends a request that arrives while a scope covering it is halted: an
// execution_halted event and a halted status, terminal; it is never retried.
func (w *Worker) halted(ctx context.Context, d *delivery, halt *contract.HaltError) consumer.Outcome {
	zerolog.Ctx(ctx).Warn().Str("scope", halt.Scope).Str("reason", halt.Reason).Msg("request refused: trading is halted")
	return w.end(ctx, d, ending{event: contract.ExecutionHalted, status: contract.StatusHalted, outcome: metrics.OutcomeHalted,
		cause: &contract.Error{Kind: contract.KindHalted, Message: halt.Error()}})
}

// end ends a request without running it, and acknowledges it.
func (w *Worker) end(ctx context.Context, d *delivery, e ending) consumer.Outcome {
	err := w.endUnrun(ctx, d, e)
	if errors.Is(err, kvstate.ErrConflict) {
		return w.claimLost(ctx, d) // another worker owns or ended the execution: its outcome stands
	}
	if err != nil {
		return w.handBack(ctx, err)
	}
	w.metrics.Ended(e.outcome)
	if e.deadLetter {
		w.metrics.DeadLettered(e.cause.Kind)
	}
	return consumer.Outcome{Decision: consumer.Ack}
}

// ending is how a request ends without running.
type ending struct {
	event, status, outcome string
	cause                  *contract.Error
	deadLetter             bool
}

// endUnrun gives a request that will not run its terminal status and event, and a
// dead letter when asked. Each step is idempotent, so a redelivery may repeat it.
func (w *Worker) endUnrun(ctx context.Context, d *delivery, e ending) error {
	if e.deadLetter {
		if err := w.deadLetter(ctx, d, e.cause); err != nil {
			return err
		}
	}
	id := execution.Identity{ExecutionID: d.executionID, WorkflowID: d.workflowID, CorrelationID: d.correlationID, BotID: d.botID, Traceparent: d.traceparent}
	if d.req != nil {
		id.RequestID, id.StrategyID = d.req.RequestID, d.req.StrategyID
	}
	botID := d.botID
	if botID == contract.NoBot {
		botID = ""
	}
	lastSeq, err := w.lastEventSeq(ctx, d)
	if err != nil {
		return err
	}
	// Named by the status revision it replaces: only one writer can replace it.
	ev := execution.NewEvent(id, d.statusRev, lastSeq+1, contract.Event{Type: e.event, Error: e.cause, Reason: e.cause.Message})
	if d.workflowID != contract.NoBot {
		now := time.Now().UTC()
		st := &contract.Status{
			ExecutionID: d.executionID, WorkflowID: d.workflowID, RequestID: id.RequestID,
			BotID: botID, StrategyID: id.StrategyID, CorrelationID: d.correlationID,
			Status: e.status, Attempt: int(d.meta.NumDelivered), WorkerID: w.cfg.WorkerID,
			UpdatedAt: now, FinishedAt: &now, Error: e.cause, TerminalEvent: &ev,
		}
		if d.status != nil {
			st.CreatedAt, st.WorkflowVersion = d.status.CreatedAt, d.status.WorkflowVersion
		} else {
			st.CreatedAt = &now
		}
		if _, err := w.store.PutStatus(ctx, st, d.statusRev); err != nil {
			return err // ErrConflict: another worker owns or ended the execution; publish nothing
		}
	}
	return w.pub.PublishEvent(ctx, &ev)
}

// deadLetter stores the request and why it can never run.
func (w *Worker) deadLetter(ctx context.Context, d *delivery, cause *contract.Error) error {
	dl := &contract.DeadLetter{
		Kind: cause.Kind, Reason: cause.Message, Subject: d.msg.Subject(),
		WorkflowID: d.workflowID, ExecutionID: d.executionID, CorrelationID: d.correlationID,
		StreamSeq: d.meta.Sequence.Stream, Deliveries: d.meta.NumDelivered, Time: time.Now().UTC(),
		LastStatus: d.status,
	}
	data := d.msg.Data()
	switch {
	case len(data) > dlqPayloadLimit:
		dl.Payload, dl.Truncated = truncateUTF8(data, dlqPayloadLimit), true
	case json.Valid(data):
		dl.Request = data
	default:
		dl.Payload = string(data)
	}
	return w.pub.DeadLetter(ctx, dl, "dlq."+w.execStreamTag+"-"+strconv.FormatUint(d.meta.Sequence.Stream, 10))
}

// truncateUTF8 returns at most n bytes of data as a string, cut at a rune boundary.
func truncateUTF8(data []byte, n int) string {
	for n > 0 && !utf8.RuneStart(data[n]) {
		n--
	}
	return string(data[:n])
}
