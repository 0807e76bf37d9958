// Package publish stores the messages of the contract in their streams,
// idempotently: each carries a deterministic Nats-Msg-Id, so a retry or a resumed
// execution never stores it twice within the stream's duplicate window.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/resilience"
)

// Publisher publishes events, dead letters and other messages of the contract.
type Publisher struct {
	js       jetstream.Publisher
	subjects contract.Subjects
}

// New returns a publisher.
func New(js jetstream.Publisher, subjects contract.Subjects) *Publisher {
	return &Publisher{js: js, subjects: subjects}
}

// PublishEvent stores a lifecycle event with Nats-Msg-Id = its event id.
func (p *Publisher) PublishEvent(ctx context.Context, ev *contract.Event) error {
	msg, err := EventMsg(p.subjects, ev)
	if err != nil {
		return err
	}
	_, err = p.publishMsg(ctx, msg)
	return err
}

// EventMsg is the message of a lifecycle event: on its subject, with Nats-Msg-Id
// = its event id and its correlation id and trace context as headers.
func EventMsg(subjects contract.Subjects, ev *contract.Event) (*nats.Msg, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.EventID, err)
	}
	return newMsg(subjects.Event(ev.BotID, ev.WorkflowID, ev.ExecutionID, ev.Type), ev.EventID, ev.CorrelationID, ev.Traceparent, data), nil
}

// DeadLetter stores a request that can never run, with a message id naming the
// request (its stream and sequence), so that a redelivered request is
// dead-lettered once.
func (p *Publisher) DeadLetter(ctx context.Context, dl *contract.DeadLetter, msgID string) error {
	data, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	wf := dl.WorkflowID
	if wf == "" {
		wf = contract.NoBot
	}
	_, err = p.Msg(ctx, p.subjects.DLQ(wf), msgID, dl.CorrelationID, data)
	return err
}

// Msg publishes data to subject with the given message and correlation ids, retrying
// while the broker is unreachable, and returns the stream's acknowledgement.
func (p *Publisher) Msg(ctx context.Context, subject, msgID, correlationID string, data []byte) (*jetstream.PubAck, error) {
	return p.publish(ctx, subject, msgID, correlationID, "", data)
}

func (p *Publisher) publish(ctx context.Context, subject, msgID, correlationID, traceparent string, data []byte) (*jetstream.PubAck, error) {
	return p.publishMsg(ctx, newMsg(subject, msgID, correlationID, traceparent, data))
}

func newMsg(subject, msgID, correlationID, traceparent string, data []byte) *nats.Msg {
	// Room for the three headers, so the map is not grown as they are set.
	msg := &nats.Msg{Subject: subject, Data: data, Header: make(nats.Header, 3)}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if correlationID != "" {
		msg.Header.Set(contract.HeaderCorrelationID, correlationID)
	}
	if traceparent != "" {
		msg.Header.Set(contract.HeaderTraceparent, traceparent)
	}
	return msg
}

// publishMsg publishes msg, retrying while the broker is unreachable.
func (p *Publisher) publishMsg(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	var ack *jetstream.PubAck
	err := resilience.RetryIO(ctx, IsPermanent, func(ctx context.Context) error {
		var err error
		ack, err = p.js.PublishMsg(ctx, msg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", msg.Subject, err)
	}
	return ack, nil
}

// IsPermanent reports publish errors that a retry cannot fix: the message itself is
// refused. Everything else (timeouts, no responders, a leader being elected) passes.
func IsPermanent(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return true
	}
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject)
}

// Order stores an order intent on flow.orders.<bot_id> with Nats-Msg-Id = its client
// order id, and returns its stream sequence and whether it was already stored.
func (p *Publisher) Order(ctx context.Context, o *contract.OrderIntent) (uint64, bool, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return 0, false, fmt.Errorf("encode order %s: %w", o.ClientOrderID, err)
	}
	ack, err := p.publish(ctx, p.subjects.Orders(o.BotID), o.ClientOrderID, o.CorrelationID, o.Traceparent, data)
	if err != nil {
		return 0, false, err
	}
	return ack.Sequence, ack.Duplicate, nil
}
