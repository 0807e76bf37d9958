package execution

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/publish"
	"github.com/flowguard/flowguard/internal/resilience"
)

// Identity names an execution in its events.
type Identity struct {
	ExecutionID     string
	WorkflowID      string
	WorkflowVersion uint64
	BotID           string // contract.NoBot when the request names none
	StrategyID      string
	CorrelationID   string
	RequestID       string
	Traceparent     string
}

// busyRetries bounds how often a write refused because its subject was busy in a
// replicated stream is tried again, one at a time.
const busyRetries = 20

// Owner is one worker's claim on one execution. Every write it makes is fenced by
// the claim or, for events, named by it. It is safe for concurrent use.
type Owner struct {
	s             *Store
	claim         uint64
	status        contract.Status // as claimed
	statusSubject string
	id            Identity

	mu      sync.Mutex
	seq     uint64
	pending []*write
	failed  error // the first write that failed for good
}

// write is a publish in flight.
type write struct {
	what  string
	msg   *nats.Msg
	fut   jetstream.PubAckFuture
	event bool // deduplicated by its message id
}

func newOwner(s *Store, st *contract.Status, claim uint64, id Identity, lastSeq uint64) *Owner {
	return &Owner{
		s: s, claim: claim, status: *st, seq: lastSeq,
		statusSubject: s.kvPrefix + contract.StatusKey(st.WorkflowID, st.ExecutionID),
		id:            id,
	}
}

// Claim is the fencing token: the status revision written by the claim.
func (o *Owner) Claim() uint64 { return o.claim }

// Emit numbers ev and publishes it without waiting; events are published in
// order. It returns the error of an earlier write that failed (ErrLostOwnership
// when the execution was taken over): the execution should stop.
func (o *Owner) Emit(ev contract.Event) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	built := o.build(ev)
	msg, err := publish.EventMsg(o.s.subjects, &built)
	if err != nil {
		return err
	}
	return o.send(&write{what: "event " + built.EventID, msg: msg, event: true})
}

// build numbers ev and fills it. o.mu is held.
func (o *Owner) build(ev contract.Event) contract.Event {
	o.seq++
	return NewEvent(o.id, o.claim, o.seq, ev)
}

// NewEvent fills ev with the execution's identity, its sequence, its id (see
// EventID), the contract version and the time.
func NewEvent(id Identity, claim, seq uint64, ev contract.Event) contract.Event {
	ev.WorkflowID, ev.WorkflowVersion, ev.BotID, ev.StrategyID = id.WorkflowID, id.WorkflowVersion, id.BotID, id.StrategyID
	ev.ExecutionID, ev.CorrelationID, ev.RequestID, ev.Traceparent = id.ExecutionID, id.CorrelationID, id.RequestID, id.Traceparent
	ev.Seq = seq
	ev.ContractVersion = contract.Version
	ev.EventID = EventID(id.ExecutionID, claim, seq)
	ev.Time = time.Now().UTC()
	return ev
}

// EventID is the id (and Nats-Msg-Id) of an execution's event:
// <execution_id>.<claim>.<seq>, the claim being that of the owner that published
// it, so that two owners' events never share an id.
func EventID(executionID string, claim, seq uint64) string {
	return executionID + "." + strconv.FormatUint(claim, 10) + "." + strconv.FormatUint(seq, 10)
}

// Checkpoint stores a finished node, fenced by the claim, without waiting.
func (o *Owner) Checkpoint(cp *contract.Checkpoint) error {
	return o.put("checkpoint "+cp.NodeID, contract.CheckpointKey(o.status.WorkflowID, o.status.ExecutionID, cp.NodeID), cp)
}

// SetLatest records the execution as its workflow's latest, without waiting. It
// is not fenced: it names the execution, not its state.
func (o *Owner) SetLatest() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	msg := nats.NewMsg(o.s.kvPrefix + contract.LatestKey(o.status.WorkflowID))
	msg.Data = []byte(o.status.ExecutionID)
	return o.send(&write{what: "latest execution", msg: msg})
}

// put publishes v to key of the state bucket without waiting, fenced by the claim.
func (o *Owner) put(what, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	msg := nats.NewMsg(o.s.kvPrefix + key)
	msg.Data = data
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(o.claim, 10))
	msg.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, o.statusSubject)
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.send(&write{what: what, msg: msg})
}

// send starts a publish and keeps its future. o.mu is held.
func (o *Owner) send(w *write) error {
	o.reap()
	if o.failed != nil {
		return o.failed
	}
	// On an error (too many publishes pending, say), fut is nil: Await publishes
	// the write again and waits for it.
	w.fut, _ = o.s.js.PublishMsgAsync(copyMsg(w.msg))
	o.pending = append(o.pending, w)
	return nil
}

// reap settles the writes already answered, so that a refusal is seen early and
// the pending list stays short. o.mu is held.
func (o *Owner) reap() {
	kept := o.pending[:0]
	for _, w := range o.pending {
		if w.fut == nil {
			kept = append(kept, w)
			continue
		}
		select {
		case ack := <-w.fut.Ok():
			if err := check(w, ack); err != nil && o.failed == nil {
				o.failed = err
			}
		case err := <-w.fut.Err():
			lost, _ := classify(err)
			switch {
			case !errors.Is(lost, ErrLostOwnership):
				w.fut = nil // to be published again by Await
				kept = append(kept, w)
			case o.failed == nil:
				o.failed = fmt.Errorf("%s: %w", w.what, lost)
			}
		default:
			kept = append(kept, w)
		}
	}
	clear(o.pending[len(kept):])
	o.pending = kept
}

// check settles a write acknowledged on its first try: an event already stored
// under its id means another writer used this owner's claim. (A retry may find
// its own earlier try stored: that is no error.)
func check(w *write, ack *jetstream.PubAck) error {
	if w.event && ack.Duplicate {
		return fmt.Errorf("%s: the event id was already stored, by another writer with this claim; stopping", w.what)
	}
	return nil
}

// Await waits until every write made so far is stored. It returns
// ErrLostOwnership when the server refused one because another worker claimed
// the execution, or the error of a write that could not be stored.
func (o *Owner) Await(ctx context.Context) error {
	o.s.roundTrip("await writes")
	return o.await(ctx)
}

func (o *Owner) await(ctx context.Context) error {
	o.mu.Lock()
	pending := o.pending
	o.pending = nil
	failed := o.failed
	o.mu.Unlock()
	if failed != nil {
		return failed
	}
	var errs []error
	for _, w := range pending {
		if err := o.settle(ctx, w); err != nil {
			errs = append(errs, err)
			if errors.Is(err, ErrLostOwnership) || ctx.Err() != nil {
				break
			}
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		o.mu.Lock()
		if o.failed == nil || errors.Is(err, ErrLostOwnership) {
			o.failed = err
		}
		o.mu.Unlock()
	}
	return err
}

// settle waits for one write; a write that failed for a reason other than the
// fence is published again, synchronously, until it is stored or ctx ends.
func (o *Owner) settle(ctx context.Context, w *write) error {
	if w.fut != nil {
		select {
		case ack := <-w.fut.Ok():
			return check(w, ack)
		case err := <-w.fut.Err():
			if lost, _ := classify(err); errors.Is(lost, ErrLostOwnership) {
				return fmt.Errorf("%s: %w", w.what, lost)
			}
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", w.what, context.Cause(ctx))
		}
	}
	busy := 0
	err := resilience.RetryIO(ctx, func(err error) bool {
		if errors.Is(err, ErrLostOwnership) || publish.IsPermanent(err) {
			return true
		}
		if _, busyNow := classify(err); busyNow {
			busy++
			return busy > busyRetries
		}
		return false
	}, func(ctx context.Context) error {
		_, err := o.s.js.PublishMsg(ctx, copyMsg(w.msg))
		if lost, _ := classify(err); errors.Is(lost, ErrLostOwnership) {
			return lost
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", w.what, err)
	}
	return nil
}

// copyMsg returns a fresh message with w's subject, headers and data: a message
// is not reused across publishes.
func copyMsg(m *nats.Msg) *nats.Msg {
	c := nats.NewMsg(m.Subject)
	c.Data = m.Data
	for k, v := range m.Header {
		c.Header[k] = append([]string(nil), v...)
	}
	return c
}

// Confirm waits for every write made so far and checks that the execution is
// still this owner's: asked before a side effect. It returns ErrLostOwnership
// when another worker has claimed it.
func (o *Owner) Confirm(ctx context.Context) error {
	if err := o.Await(ctx); err != nil {
		return err
	}
	_, rev, err := o.s.Status(ctx, o.status.WorkflowID, o.status.ExecutionID)
	if err != nil {
		return fmt.Errorf("confirm ownership: %w", err)
	}
	if rev != o.claim {
		return ErrLostOwnership
	}
	return nil
}

// Checkpoints returns the finished nodes of earlier attempts, by node id. Read
// after the claim, they hold no write of a stale owner: any made since was refused.
func (o *Owner) Checkpoints(ctx context.Context) (map[string]*contract.Checkpoint, error) {
	o.s.roundTrip("read checkpoints")
	return o.s.state.Checkpoints(ctx, o.status.WorkflowID, o.status.ExecutionID)
}

// OrderMark returns an order node's mark; found is false when it has none.
func (o *Owner) OrderMark(ctx context.Context, nodeID string) (*contract.OrderMark, bool, error) {
	o.s.roundTrip("read order mark")
	if err := o.failure(); err != nil {
		return nil, false, nodes.Stopped(err)
	}
	m, _, err := o.s.state.OrderMark(ctx, o.status.WorkflowID, o.status.ExecutionID, nodeID)
	if errors.Is(err, kvstate.ErrNotFound) {
		return nil, false, nil
	}
	return m, err == nil, err
}

// failure is the error of a write that failed for good, if any.
func (o *Owner) failure() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failed
}

// PutOrderMark stores an order node's mark, fenced by the claim, and waits for it
// (and every write before it). When the execution was taken over, the error
// matches both ErrLostOwnership and nodes.ErrStopped.
func (o *Owner) PutOrderMark(ctx context.Context, nodeID string, m *contract.OrderMark) error {
	err := o.put("order mark "+nodeID, contract.OrderMarkKey(o.status.WorkflowID, o.status.ExecutionID, nodeID), m)
	if err == nil {
		err = o.Await(ctx)
	}
	if errors.Is(err, ErrLostOwnership) {
		return nodes.Stopped(err)
	}
	return err
}

// Finish ends the execution: it stores the result (fenced), waits for every
// write, writes the final status by the claim and only then publishes the
// terminal event, which the status carries so that a redelivery can publish it
// should this worker die in between. It returns ErrLostOwnership when another
// worker took the execution over: then nothing terminal was written.
func (o *Owner) Finish(ctx context.Context, result *contract.Result, st *contract.Status, terminal contract.Event) error {
	if err := o.put("result", contract.ResultKey(o.status.WorkflowID, o.status.ExecutionID), result); err != nil {
		return err
	}
	if err := o.Await(ctx); err != nil {
		return err
	}
	o.mu.Lock()
	ev := o.build(terminal)
	o.mu.Unlock()
	st.TerminalEvent = &ev
	o.s.roundTrip("final status")
	if _, err := o.s.state.PutStatus(ctx, st, o.claim); err != nil {
		if errors.Is(err, kvstate.ErrConflict) {
			return fmt.Errorf("final status: %w", ErrLostOwnership)
		}
		return err
	}
	o.s.roundTrip("terminal event")
	msg, err := publish.EventMsg(o.s.subjects, &ev)
	if err != nil {
		return err
	}
	// The execution has ended, as this owner's: its event is owed even if the
	// worker is now giving its requests up (ctx cancelled), or a reader of the
	// status would wait for an event that comes only with a redelivery.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), terminalEventTimeout)
	defer cancel()
	return o.settle(pctx, &write{what: "event " + ev.EventID, msg: msg, event: true})
}

// terminalEventTimeout bounds the publish of a terminal event once the final
// status is written; should it fail, the redelivery publishes the event from the
// status.
const terminalEventTimeout = 30 * time.Second
