package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
)

// maxExecutionEvents bounds the events read for one execution's page.
const maxExecutionEvents = 5000

// readExecution reads an execution's events from FLOW_EVENTS, in order: its page
// opens as long as the stream keeps them.
func (s *Server) readExecution(ctx context.Context, workflowID, executionID string) ([]contract.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	filter := s.client.Subjects().EventFilter("", workflowID, executionID)
	stream, err := s.feeds.js.Stream(ctx, contract.StreamEvents)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, client.ErrNotProvisioned
	}
	if err != nil {
		return nil, fmt.Errorf("read the events of %s: %w", executionID, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("read the events of %s: %w", executionID, err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil, nil
	}
	// A page of a running execution reads again on every change: remove each
	// reader at once rather than leave it to expire.
	cons, err := s.feeds.js.OrderedConsumer(ctx, contract.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("read the events of %s: %w", executionID, err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			_ = s.feeds.js.DeleteConsumer(context.WithoutCancel(ctx), contract.StreamEvents, info.Name)
		}
	}()
	var out []contract.Event
	for uint64(len(out)) < min(total, maxExecutionEvents) {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, fmt.Errorf("read the events of %s: %w", executionID, err)
		}
		n, pending := 0, uint64(0)
		for m := range batch.Messages() {
			n++
			var ev contract.Event
			if json.Unmarshal(m.Data(), &ev) == nil {
				out = append(out, ev)
			}
			if meta, err := m.Metadata(); err == nil {
				pending = meta.NumPending
			}
		}
		if n == 0 || pending == 0 {
			break
		}
	}
	return out, nil
}

// Segment kinds of a timeline.
const (
	segOK      = "ok"
	segFailed  = "failed"
	segWait    = "wait"
	segRunning = "running"
	segSkipped = "skipped"
	segStopped = "stopped"
)

// Segment is one attempt of a node, or a wait between two.
type Segment struct {
	Kind       string
	Attempt    int
	Start, End time.Time
	Note       string
	// X and W place the segment on the timeline, in percent of its width.
	X, W float64
}

// Lane is one node's row of the timeline.
type Lane struct {
	NodeID, NodeType string
	State            string
	Attempts         int
	Restored         bool
	Segments         []Segment
	Outputs          map[string]any
	Error            *contract.Error
	Reason           string
}

// Timeline is an execution's nodes laid out in time, built from its events.
type Timeline struct {
	Start, End    time.Time
	Lanes         []*Lane
	Started       *contract.Event
	Terminal      *contract.Event
	Events        []contract.Event
	CorrelationID string
	Traceparent   string
	BotID         string
	StrategyID    string
	Version       uint64
	Resumed       bool
	Restored      []string
}

// Duration is the execution's span so far.
func (t *Timeline) Duration() time.Duration { return t.End.Sub(t.Start) }

// buildTimeline lays out events (one execution's, in order); an execution that
// has not ended extends to now.
func buildTimeline(events []contract.Event, now time.Time) *Timeline {
	t := &Timeline{Events: events}
	if len(events) == 0 {
		return t
	}
	t.Start, t.End = events[0].Time, events[len(events)-1].Time
	lanes := map[string]*Lane{}
	open := map[string]*Segment{}
	lane := func(ev *contract.Event) *Lane {
		l := lanes[ev.NodeID]
		if l == nil {
			l = &Lane{NodeID: ev.NodeID, State: segRunning}
			lanes[ev.NodeID] = l
			t.Lanes = append(t.Lanes, l)
		}
		if ev.NodeType != "" {
			l.NodeType = ev.NodeType
		}
		return l
	}
	closeOpen := func(l *Lane, at time.Time, kind, note string) {
		if seg := open[l.NodeID]; seg != nil {
			seg.End, seg.Kind, seg.Note = at, kind, note
			l.Segments = append(l.Segments, *seg)
			delete(open, l.NodeID)
		}
	}
	for i := range events {
		ev := &events[i]
		if t.CorrelationID == "" {
			t.CorrelationID = ev.CorrelationID
		}
		if ev.Traceparent != "" {
			t.Traceparent = ev.Traceparent
		}
		t.BotID, t.StrategyID = ev.BotID, ev.StrategyID
		if ev.WorkflowVersion != 0 {
			t.Version = ev.WorkflowVersion
		}
		switch ev.Type {
		case contract.ExecutionStarted:
			if t.Started == nil {
				t.Started = ev
			}
			if ev.Resumed {
				t.Resumed = true
				t.Restored = append(t.Restored, ev.RestoredNodes...)
			}
		case contract.NodeStarted:
			l := lane(ev)
			closeOpen(l, ev.Time, segStopped, "started again (redelivered)")
			open[l.NodeID] = &Segment{Start: ev.Time, Attempt: max(1, ev.Attempt)}
			l.Attempts = max(l.Attempts, 1)
		case contract.NodeRetrying:
			l := lane(ev)
			note := ""
			if ev.Error != nil {
				note = ev.Error.Kind + ": " + ev.Error.Message
			}
			if open[l.NodeID] == nil {
				open[l.NodeID] = &Segment{Start: ev.Time, Attempt: max(1, ev.Attempt-1)}
			}
			closeOpen(l, ev.Time, segFailed, note)
			resume := ev.Time.Add(time.Duration(derefInt(ev.DelayMS)) * time.Millisecond)
			l.Segments = append(l.Segments, Segment{Kind: segWait, Start: ev.Time, End: resume, Attempt: ev.Attempt,
				Note: "wait " + formatDuration(resume.Sub(ev.Time)) + " before attempt " + fmt.Sprint(ev.Attempt)})
			open[l.NodeID] = &Segment{Start: resume, Attempt: ev.Attempt}
			l.Attempts = max(l.Attempts, ev.Attempt)
		case contract.NodeCompleted, contract.NodeFailed:
			l := lane(ev)
			if open[l.NodeID] == nil {
				start := ev.Time.Add(-time.Duration(derefInt(ev.DurationMS)) * time.Millisecond)
				open[l.NodeID] = &Segment{Start: start, Attempt: max(1, ev.Attempt)}
			}
			kind, note := segOK, "completed"
			l.State, l.Outputs = contract.NodeStateCompleted, ev.Outputs
			if ev.Type == contract.NodeFailed {
				kind, l.State, l.Error = segFailed, contract.NodeStateFailed, ev.Error
				if ev.Error != nil {
					note = ev.Error.Kind + ": " + ev.Error.Message
				}
			}
			closeOpen(l, ev.Time, kind, note)
			l.Attempts = max(l.Attempts, ev.Attempt)
		case contract.NodeSkipped:
			l := lane(ev)
			l.State, l.Reason = contract.NodeStateSkipped, ev.Reason
			l.Segments = append(l.Segments, Segment{Kind: segSkipped, Start: ev.Time, End: ev.Time, Note: ev.Reason})
		default:
			if contract.IsTerminalEvent(ev.Type) {
				t.Terminal = ev
			}
		}
	}
	end := now
	if t.Terminal != nil {
		end = t.Terminal.Time
	}
	if end.After(t.End) {
		t.End = end
	}
	for _, l := range t.Lanes {
		if open[l.NodeID] != nil {
			kind, note := segRunning, "running"
			if t.Terminal != nil {
				kind, note, l.State = segStopped, "stopped: "+t.Terminal.Type, segStopped
			}
			closeOpen(l, end, kind, note)
		}
	}
	for _, id := range t.Restored {
		if l := lanes[id]; l != nil {
			l.Restored = true
		} else {
			t.Lanes = append(t.Lanes, &Lane{NodeID: id, State: "restored", Restored: true})
		}
	}
	span := t.End.Sub(t.Start)
	for _, l := range t.Lanes {
		for i := range l.Segments {
			seg := &l.Segments[i]
			if span > 0 {
				seg.X = float64(seg.Start.Sub(t.Start)) / float64(span) * 100
				seg.W = float64(seg.End.Sub(seg.Start)) / float64(span) * 100
			}
			seg.X = max(0, min(seg.X, 99.5))
			seg.W = max(0.5, min(seg.W, 100-seg.X))
		}
	}
	return t
}
