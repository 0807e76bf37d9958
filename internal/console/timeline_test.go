package console

import (
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

func TestTimelineShowsAttemptsRetriesAndWaits(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	delay, took := int64(200), int64(100)
	evs := []contract.Event{
		{Type: contract.ExecutionStarted, Time: at(0), CorrelationID: "c1", Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{Type: contract.NodeStarted, NodeID: "quote", NodeType: "http", Attempt: 1, Time: at(0)},
		{Type: contract.NodeRetrying, NodeID: "quote", Attempt: 2, DelayMS: &delay, Error: &contract.Error{Kind: "http_status", Message: "503"}, Time: at(100)},
		{Type: contract.NodeCompleted, NodeID: "quote", Attempt: 2, DurationMS: &took, Time: at(500)},
		{Type: contract.NodeSkipped, NodeID: "order", Reason: "condition false", Time: at(500)},
		{Type: contract.ExecutionCompleted, Time: at(1000)},
	}
	tl := buildTimeline(evs, at(5000))
	if tl.Duration() != time.Second || tl.CorrelationID != "c1" || tl.Traceparent == "" || tl.Terminal == nil {
		t.Fatalf("timeline %s %q %q %v", tl.Duration(), tl.CorrelationID, tl.Traceparent, tl.Terminal)
	}
	if len(tl.Lanes) != 2 {
		t.Fatalf("%d lanes, want quote and order", len(tl.Lanes))
	}
	quote := tl.Lanes[0]
	want := []struct {
		kind       string
		start, end int
	}{{segFailed, 0, 100}, {segWait, 100, 300}, {segOK, 300, 500}}
	if len(quote.Segments) != len(want) || quote.Attempts != 2 || quote.State != contract.NodeStateCompleted {
		t.Fatalf("quote: %d segments, %d attempts, %s", len(quote.Segments), quote.Attempts, quote.State)
	}
	for i, w := range want {
		s := quote.Segments[i]
		if s.Kind != w.kind || !s.Start.Equal(at(w.start)) || !s.End.Equal(at(w.end)) {
			t.Errorf("segment %d: %s %s..%s, want %s %dms..%dms", i, s.Kind, s.Start.Sub(t0), s.End.Sub(t0), w.kind, w.start, w.end)
		}
	}
	if s := quote.Segments[1]; s.X != 10 || s.W != 20 {
		t.Errorf("the wait is placed at %.1f%% for %.1f%%, want 10%% for 20%%", s.X, s.W)
	}
	if order := tl.Lanes[1]; order.State != contract.NodeStateSkipped || order.Reason != "condition false" {
		t.Errorf("order lane %+v", order)
	}
}

func TestTimelineOfARunningExecutionExtendsToNow(t *testing.T) {
	t0 := time.Now().Add(-time.Second)
	tl := buildTimeline([]contract.Event{
		{Type: contract.ExecutionStarted, Time: t0, Resumed: true, RestoredNodes: []string{"a"}},
		{Type: contract.NodeStarted, NodeID: "b", Time: t0},
	}, t0.Add(time.Second))
	if !tl.Resumed || len(tl.Lanes) != 2 || tl.Lanes[0].Segments[0].Kind != segRunning || !tl.Lanes[1].Restored {
		t.Fatalf("timeline %+v", tl)
	}
}
