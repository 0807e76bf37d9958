package console

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

// Status of an execution that was rejected: the contract's events say so, its
// status document does not exist.
const statusRejected = "rejected"

// Execution is what the list shows of one execution, built from its events.
type Execution struct {
	ID, WorkflowID, BotID, StrategyID string
	Status, ErrorKind, CorrelationID  string
	Started, Updated, Finished        time.Time
	Resumed                           bool
}

// Duration is the time from the first to the terminal event, or to the last one
// while it runs.
func (e Execution) Duration() time.Duration {
	if !e.Finished.IsZero() {
		return e.Finished.Sub(e.Started)
	}
	return e.Updated.Sub(e.Started)
}

// Query selects executions; empty fields match anything.
type Query struct {
	BotID, WorkflowID, Status string
	// Since and Until bound the start time when not zero.
	Since, Until time.Time
	// Offset skips that many matches, newest first; Limit caps the page.
	Offset, Limit int
}

func (q Query) match(e *Execution) bool {
	return (q.BotID == "" || e.BotID == q.BotID) &&
		(q.WorkflowID == "" || e.WorkflowID == q.WorkflowID) &&
		(q.Status == "" || e.Status == q.Status) &&
		(q.Since.IsZero() || !e.Started.Before(q.Since)) &&
		(q.Until.IsZero() || !e.Started.After(q.Until))
}

// index holds the latest executions seen in the event window, at most max of
// them: the oldest first seen is forgotten first, so memory stays bounded however
// many events the window holds. It also keeps per-minute figures per workflow for
// the plots. It is safe for concurrent use.
type index struct {
	mu     sync.RWMutex
	max    int
	byKey  map[string]*Execution
	order  []string // keys, oldest first seen first
	series map[string]*series
	// bots and workflows count the executions kept of each, for the filters.
	bots, workflows map[string]int
}

func newIndex(max int) *index {
	return &index{max: max, byKey: make(map[string]*Execution, max), series: map[string]*series{},
		bots: map[string]int{}, workflows: map[string]int{}}
}

func execKey(workflowID, executionID string) string { return workflowID + "/" + executionID }

// apply folds an event into the index and returns a copy of the execution it
// changed.
func (x *index) apply(ev *contract.Event) Execution {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := execKey(ev.WorkflowID, ev.ExecutionID)
	e := x.byKey[key]
	if e == nil {
		e = &Execution{ID: ev.ExecutionID, WorkflowID: ev.WorkflowID, BotID: ev.BotID, StrategyID: ev.StrategyID,
			CorrelationID: ev.CorrelationID, Status: contract.StatusRunning, Started: ev.Time}
		x.byKey[key] = e
		x.order = append(x.order, key)
		x.bots[e.BotID]++
		x.workflows[e.WorkflowID]++
		x.evict()
	}
	if ev.Time.After(e.Updated) {
		e.Updated = ev.Time
	}
	if ev.Time.Before(e.Started) {
		e.Started = ev.Time
	}
	if ev.Resumed {
		e.Resumed = true
	}
	if ev.Error != nil {
		e.ErrorKind = ev.Error.Kind
	}
	if contract.IsTerminalEvent(ev.Type) && e.Finished.IsZero() {
		e.Finished = ev.Time
		e.Status = terminalStatus(ev.Type)
		x.seriesOf(ev.WorkflowID).add(ev.Time, e.Finished.Sub(e.Started), e.Status)
	}
	return *e
}

// evict forgets the oldest executions beyond max.
func (x *index) evict() {
	n := len(x.order) - x.max
	if n <= 0 {
		return
	}
	for _, key := range x.order[:n] {
		e := x.byKey[key]
		delete(x.byKey, key)
		uncount(x.bots, e.BotID)
		uncount(x.workflows, e.WorkflowID)
	}
	// Copy when the dropped head is large, so the backing array does not grow forever.
	if cap(x.order) > 2*x.max {
		x.order = slices.Clone(x.order[n:])
	} else {
		x.order = x.order[n:]
	}
}

func uncount(m map[string]int, k string) {
	if m[k]--; m[k] <= 0 {
		delete(m, k)
	}
}

func terminalStatus(eventType string) string {
	switch eventType {
	case contract.ExecutionCompleted:
		return contract.StatusCompleted
	case contract.ExecutionFailed:
		return contract.StatusFailed
	case contract.ExecutionHalted:
		return contract.StatusHalted
	}
	return statusRejected
}

// list returns the page of executions matching q, newest first seen first, and
// the number of matches.
func (x *index) list(q Query) (page []Execution, total int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i := len(x.order) - 1; i >= 0; i-- {
		e := x.byKey[x.order[i]]
		if !q.match(e) {
			continue
		}
		if total >= q.Offset && len(page) < q.Limit {
			page = append(page, *e)
		}
		total++
	}
	return page, total
}

// get returns an execution by workflow and id.
func (x *index) get(workflowID, executionID string) (Execution, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.byKey[execKey(workflowID, executionID)]
	if !ok {
		return Execution{}, false
	}
	return *e, true
}

// find returns the workflow of an execution known by id alone.
func (x *index) find(executionID string) (string, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i := len(x.order) - 1; i >= 0; i-- {
		if wf, id, _ := strings.Cut(x.order[i], "/"); id == executionID {
			return wf, true
		}
	}
	return "", false
}

// facets returns the bots and workflows seen, sorted, for the filters.
func (x *index) facets() (bots, workflows []string) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return slices.Sorted(maps.Keys(x.bots)), slices.Sorted(maps.Keys(x.workflows))
}

func (x *index) seriesOf(workflowID string) *series {
	s := x.series[workflowID]
	if s == nil {
		s = &series{}
		x.series[workflowID] = s
	}
	return s
}

// plotMinutes is how many minutes the plots show.
const plotMinutes = 60

// samplesPerMinute bounds the durations kept per minute and workflow for the
// percentiles: beyond it, a uniform sample (reservoir) of them is kept.
const samplesPerMinute = 256

// minute is one minute of a workflow's finished executions.
type minute struct {
	start     int64 // unix minute
	count     int
	failed    int
	durations []time.Duration
}

// series is a workflow's last plotMinutes minutes.
type series struct{ minutes [plotMinutes]minute }

func (s *series) add(at time.Time, d time.Duration, status string) {
	unix := at.Unix() / 60
	m := &s.minutes[unix%plotMinutes]
	if m.start != unix {
		*m = minute{start: unix}
	}
	m.count++
	if status != contract.StatusCompleted {
		m.failed++
	}
	if len(m.durations) < samplesPerMinute {
		m.durations = append(m.durations, d)
	} else if i := rand.IntN(m.count); i < samplesPerMinute {
		m.durations[i] = d
	}
}

// Point is one minute of a plot.
type Point struct {
	Minute   time.Time
	Count    int
	Failed   int
	P50, P99 time.Duration
}

// plots returns, per workflow, the last plotMinutes minutes up to now, oldest first.
func (x *index) plots(now time.Time) map[string][]Point {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make(map[string][]Point, len(x.series))
	last := now.Unix() / 60
	for wf, s := range x.series {
		points := make([]Point, plotMinutes)
		for i := range points {
			unix := last - plotMinutes + 1 + int64(i)
			p := Point{Minute: time.Unix(unix*60, 0).UTC()}
			if m := &s.minutes[((unix%plotMinutes)+plotMinutes)%plotMinutes]; m.start == unix {
				p.Count, p.Failed = m.count, m.failed
				p.P50, p.P99 = percentile(m.durations, 0.50), percentile(m.durations, 0.99)
			}
			points[i] = p
		}
		out[wf] = points
	}
	return out
}

// percentile returns the q-quantile of ds (nearest rank), 0 for none.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
