package schedule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
)

// Bounds of forwarding.
const (
	forwardAckWait = 30 * time.Second
	forwardRetry   = 2 * time.Second // before a firing that could not be forwarded comes again
	// minLateness is the least a firing may be late, past the next firing's due
	// time, and still run.
	minLateness = 5 * time.Second
)

// FiringID is the request id of a schedule's firing: the schedule's name and the
// second it fired, such as every-min-20261130T080000Z. Two firings are at least a
// second apart, so they never share an id; a firing delivered again keeps its id.
func FiringID(name string, fired time.Time) string {
	return name + "-" + fired.UTC().Truncate(time.Second).Format("20060102T150405Z")
}

// Forwarder moves the firings JetStream stores in FLOW_SCHEDULES to FLOW_EXEC, as
// execution requests, through a durable consumer every worker shares: each firing
// is forwarded by one worker, with Nats-Msg-Id and request_id FiringID, then
// acknowledged. A firing delivered again is stored once more under the same id,
// which the duplicate window and the execution's status turn into a no-op.
type Forwarder struct {
	js       jetstream.JetStream
	subjects contract.Subjects
	log      zerolog.Logger
	now      func() time.Time
}

// NewForwarder returns a forwarder.
func NewForwarder(js jetstream.JetStream, subjects contract.Subjects, log zerolog.Logger) *Forwarder {
	return &Forwarder{js: js, subjects: subjects, log: log, now: time.Now}
}

// Run forwards firings until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	cons, err := f.js.CreateOrUpdateConsumer(ctx, contract.StreamSchedules, jetstream.ConsumerConfig{
		Durable: contract.DurableSchedules, Description: "flowguard workers forward schedules' firings to FLOW_EXEC",
		FilterSubject: f.subjects.FiredAll(), AckPolicy: jetstream.AckExplicitPolicy, AckWait: forwardAckWait,
		MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("consumer %s of stream %s: %w", contract.DurableSchedules, contract.StreamSchedules, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { f.forward(ctx, m) })
	if err != nil {
		return fmt.Errorf("forward schedules' firings: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// forward forwards one firing and settles it.
func (f *Forwarder) forward(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		f.log.Error().Err(err).Str("subject", m.Subject()).Msg("firing without JetStream metadata")
		return
	}
	workflowID, name, ok := strings.Cut(strings.TrimPrefix(m.Subject(), f.subjects.Prefix+".fired."), ".")
	if !ok {
		f.log.Error().Str("subject", m.Subject()).Msg("firing on a subject that names no workflow and schedule; dropped")
		_ = m.Term()
		return
	}
	id := FiringID(name, meta.Timestamp)
	log := f.log.With().Str("schedule", name).Str("workflow_id", workflowID).Str("request_id", id).Logger()
	if late := f.late(m.Headers(), meta.Timestamp); late != "" {
		log.Warn().Str("reason", late).Msg("missed firing not replayed")
		if err := m.Ack(); err != nil {
			log.Warn().Err(err).Msg("acknowledge missed firing")
		}
		return
	}
	out := nats.NewMsg(f.subjects.Exec(workflowID))
	out.Data = withRequestID(m.Data(), id)
	out.Header.Set(contract.HeaderMsgID, id)
	out.Header.Set(contract.HeaderFiredBy, name)
	if _, err := f.js.PublishMsg(ctx, out); err != nil {
		log.Warn().Err(err).Msg("forward firing; it comes again")
		_ = m.NakWithDelay(forwardRetry)
		return
	}
	if err := m.Ack(); err != nil {
		log.Warn().Err(err).Msg("acknowledge forwarded firing; it comes again, and is stored once")
	}
	log.Debug().Msg("firing forwarded")
}

// late says why a firing is too late to run: its next firing was due more than a
// period (at least minLateness) ago, as after the workers were all down; "" when
// it may run.
func (f *Forwarder) late(h nats.Header, fired time.Time) string {
	next, err := time.Parse(time.RFC3339Nano, h.Get(contract.HeaderScheduleNext))
	if err != nil {
		return "" // a one-off @at firing, or none said
	}
	allowed := max(next.Sub(fired), minLateness)
	if lag := f.now().Sub(next); lag > allowed {
		return fmt.Sprintf("fired at %s; the next firing was due %s ago", fired.UTC().Format(time.RFC3339), lag.Round(time.Second))
	}
	return ""
}

// withRequestID sets request_id in a request; a payload that is not a JSON object
// is forwarded as it is, for the worker to reject and dead-letter.
func withRequestID(data []byte, id string) []byte {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(data, &req); err != nil || req == nil {
		return data
	}
	req["request_id"], _ = json.Marshal(id)
	out, err := json.Marshal(req)
	if err != nil {
		return data
	}
	return out
}
