package console

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

// events returns the events of a two-node execution started at start that ends
// with terminal after d.
func events(wf, id, bot string, start time.Time, d time.Duration, terminal string) []contract.Event {
	return []contract.Event{
		{Type: contract.ExecutionStarted, WorkflowID: wf, ExecutionID: id, BotID: bot, Time: start},
		{Type: contract.NodeStarted, WorkflowID: wf, ExecutionID: id, BotID: bot, NodeID: "a", Time: start},
		{Type: contract.NodeCompleted, WorkflowID: wf, ExecutionID: id, BotID: bot, NodeID: "a", Time: start.Add(d / 2)},
		{Type: terminal, WorkflowID: wf, ExecutionID: id, BotID: bot, Time: start.Add(d)},
	}
}

func fill(x *index, n int, start time.Time) {
	for i := range n {
		terminal := contract.ExecutionCompleted
		if i%10 == 0 {
			terminal = contract.ExecutionFailed
		}
		for _, ev := range events(fmt.Sprintf("wf%d", i%3), fmt.Sprintf("e%06d", i), fmt.Sprintf("b%d", i%2), start.Add(time.Duration(i)*time.Millisecond), 40*time.Millisecond, terminal) {
			x.apply(&ev)
		}
	}
}

func TestIndexKeepsTheLatestExecutionsWithinItsBound(t *testing.T) {
	x := newIndex(1000)
	fill(x, 5000, time.Now().Add(-time.Minute))
	if len(x.byKey) != 1000 || len(x.order) != 1000 || cap(x.order) > 2000+1 {
		t.Fatalf("index holds %d executions, order %d (cap %d); want 1000", len(x.byKey), len(x.order), cap(x.order))
	}
	if _, ok := x.get("wf1", "e004000"); !ok {
		t.Error("a recent execution was forgotten")
	}
	if _, ok := x.get("wf0", "e000000"); ok {
		t.Error("the oldest execution was kept beyond the bound")
	}
	if x.bots["b0"]+x.bots["b1"] != 1000 || x.workflows["wf0"]+x.workflows["wf1"]+x.workflows["wf2"] != 1000 {
		t.Errorf("the filters count %v and %v, want 1000 executions each", x.bots, x.workflows)
	}
}

func TestIndexListFiltersAndPages(t *testing.T) {
	x := newIndex(100)
	start := time.Now().Add(-time.Minute)
	fill(x, 60, start)
	for _, tc := range []struct {
		name      string
		q         Query
		total     int
		first     string
		pageCount int
	}{
		{"everything, newest first", Query{Limit: 50}, 60, "e000059", 50},
		{"second page", Query{Limit: 50, Offset: 50}, 60, "e000009", 10},
		{"by workflow", Query{WorkflowID: "wf0", Limit: 50}, 20, "e000057", 20},
		{"by bot and status", Query{BotID: "b0", Status: contract.StatusFailed, Limit: 50}, 6, "e000050", 6},
		{"by start time", Query{Since: start.Add(55 * time.Millisecond), Limit: 50}, 5, "e000059", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, total := x.list(tc.q)
			if total != tc.total || len(page) != tc.pageCount || page[0].ID != tc.first {
				t.Fatalf("total %d, page of %d starting with %s; want %d, %d, %s", total, len(page), page[0].ID, tc.total, tc.pageCount, tc.first)
			}
		})
	}
}

func TestIndexStatusDurationAndErrorFromEvents(t *testing.T) {
	x := newIndex(10)
	start := time.Now()
	for _, ev := range events("wf", "e1", "b1", start, time.Second, contract.ExecutionFailed) {
		if ev.Type == contract.ExecutionFailed {
			ev.Error = &contract.Error{Kind: contract.KindTimeout, Message: "slow"}
		}
		x.apply(&ev)
	}
	e, _ := x.get("wf", "e1")
	if e.Status != contract.StatusFailed || e.Duration() != time.Second || e.ErrorKind != contract.KindTimeout {
		t.Fatalf("execution %+v", e)
	}
}

func TestPlotsThroughputAndPercentilesPerMinute(t *testing.T) {
	x := newIndex(1000)
	now := time.Now()
	for i := range 100 {
		for _, ev := range events("wf", fmt.Sprintf("e%d", i), "b", now.Add(-time.Second), time.Duration(i+1)*time.Millisecond, contract.ExecutionCompleted) {
			ev.Time = ev.Time.Add(time.Second - time.Duration(i+1)*time.Millisecond) // all finish now
			x.apply(&ev)
		}
	}
	points := x.plots(now)["wf"]
	if len(points) != plotMinutes {
		t.Fatalf("%d points, want %d", len(points), plotMinutes)
	}
	last := points[len(points)-1]
	if last.Count != 100 || last.P50 != 50*time.Millisecond || last.P99 != 99*time.Millisecond {
		t.Fatalf("last minute: %d finished, p50 %s, p99 %s; want 100, 50ms, 99ms", last.Count, last.P50, last.P99)
	}
}

// testServer is a console without NATS, for what needs only its index and pages.
func testServer(t testing.TB, cfg Config) *Server {
	views, err := newViews()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: cfg, idx: newIndex(cfg.MaxExecutions), hub: newHub(), auth: newAuth(cfg), views: views}
	s.feeds = newFeeds(nil, nil, contract.Subjects{Prefix: "flow"}, s.idx, s.hub, cfg, s.log)
	return s
}

// BenchmarkExecutionsPage renders the first page of the list, and a filtered
// one, over 10,000 executions in the window.
func BenchmarkExecutionsPage(b *testing.B) {
	s := testServer(b, Config{})
	fill(s.idx, 10000, time.Now().Add(-time.Hour))
	h := s.Handler()
	for _, path := range []string{"/executions", "/executions?workflow=wf1&status=failed", "/plots"} {
		b.Run(strings.TrimPrefix(path, "/"), func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}

// BenchmarkIndexApply folds events into an index full at 10,000 executions, so
// that every new execution evicts one, and reports the heap the index holds per
// execution.
func BenchmarkIndexApply(b *testing.B) {
	x := newIndex(10000)
	start := time.Now().Add(-time.Hour)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fill(x, 10000, start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := float64(after.HeapAlloc-before.HeapAlloc) / 10000
	evs := events("wf", "", "b1", start, time.Millisecond, contract.ExecutionCompleted)
	i := 0
	for b.Loop() {
		i++
		ev := evs[i%len(evs)]
		ev.ExecutionID = fmt.Sprintf("n%d", i/len(evs))
		x.apply(&ev)
	}
	b.ReportMetric(held, "heap-B/execution")
}
