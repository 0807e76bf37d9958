package executor

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

// EventPublisher stores one event in the events stream, deduplicated by its event id.
type EventPublisher interface {
	PublishEvent(ctx context.Context, ev *contract.Event) error
}

// Emitter numbers and publishes the events of one execution, in order.
type Emitter struct {
	pub      EventPublisher
	template contract.Event
	now      func() time.Time

	mu  sync.Mutex
	seq uint64
}

// NewEmitter returns an emitter whose first event gets sequence lastSeq+1.
func NewEmitter(pub EventPublisher, x *Execution, lastSeq uint64) *Emitter {
	return &Emitter{
		pub: pub,
		template: contract.Event{
			ContractVersion: contract.Version,
			WorkflowID:      x.WorkflowID,
			WorkflowVersion: x.WorkflowVersion,
			BotID:           x.BotToken(),
			StrategyID:      x.StrategyID,
			ExecutionID:     x.ID,
			CorrelationID:   x.CorrelationID,
			RequestID:       x.RequestID,
			Traceparent:     x.Traceparent,
		},
		now: time.Now,
		seq: lastSeq,
	}
}

// Build fills ev's identity, sequence and time without publishing it, for a
// terminal event that is persisted before it is published (see Publish).
func (em *Emitter) Build(ev contract.Event) contract.Event {
	em.mu.Lock()
	defer em.mu.Unlock()
	return em.build(ev)
}

func (em *Emitter) build(ev contract.Event) contract.Event {
	t := em.template
	t.Type, t.NodeID, t.NodeType, t.Attempt = ev.Type, ev.NodeID, ev.NodeType, ev.Attempt
	t.DelayMS, t.DurationMS, t.Error, t.Outputs, t.Reason = ev.DelayMS, ev.DurationMS, ev.Error, ev.Outputs, ev.Reason
	t.Resumed, t.RestoredNodes = ev.Resumed, ev.RestoredNodes
	em.seq++
	t.Seq = em.seq
	t.EventID = t.ExecutionID + "." + strconv.FormatUint(t.Seq, 10)
	t.Time = em.now().UTC()
	return t
}

// Emit numbers ev and publishes it; events are published one at a time, in order.
func (em *Emitter) Emit(ctx context.Context, ev contract.Event) error {
	em.mu.Lock()
	defer em.mu.Unlock()
	built := em.build(ev)
	return em.pub.PublishEvent(ctx, &built)
}

// Publish publishes an event made by Build.
func (em *Emitter) Publish(ctx context.Context, ev *contract.Event) error {
	em.mu.Lock()
	defer em.mu.Unlock()
	return em.pub.PublishEvent(ctx, ev)
}
