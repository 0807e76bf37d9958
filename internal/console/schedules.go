package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/schedule"
)

// apiAudit is the subject on which the server reports each JetStream API call of
// the account; the console reads it for purges of FLOW_SCHEDULES, which remove
// schedules without storing a message.
const apiAudit = "$JS.EVENT.ADVISORY.API"

// scheduleSettle is how long the schedules feed waits after a schedule is
// published before it reads the stream again: the message reaches the console
// and the stream at about the same time, and a burst of changes is read once.
const scheduleSettle = 150 * time.Millisecond

// Firing is the last firing of a schedule that the console saw in the events.
type Firing struct {
	At          time.Time
	WorkflowID  string
	ExecutionID string
}

// ScheduleRow is a schedule on the schedules view.
type ScheduleRow struct {
	schedule.Schedule
	// Last is its last firing seen in the event window; nil when none was.
	Last *Firing
	// LastStatus is the status of that firing's execution, when the list has it.
	LastStatus string
}

// followSchedules keeps the schedules of FLOW_SCHEDULES. The stream is a work
// queue, where a consumer would take what it reads, so the console reads the
// last message per schedule subject, and again whenever a schedule is published
// (its subject, followed with a core subscription) or removed (a purge of the
// stream, in the server's API audit); firings of @at schedules, which the server
// removes once fired, make it read them again too.
func (f *feeds) followSchedules(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	f.mu.Lock()
	f.pokeSchedules = poke
	f.mu.Unlock()
	sub, err := f.nc.Subscribe(f.subjects.SchedulesAll(), func(*nats.Msg) { poke() })
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	purge := []byte("STREAM.PURGE." + contract.StreamSchedules)
	audit, err := f.nc.Subscribe(apiAudit, func(m *nats.Msg) {
		if bytes.Contains(m.Data, purge) {
			poke()
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = audit.Unsubscribe() }()
	book := schedule.New(f.js, f.subjects)
	for {
		list, err := book.List(ctx)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.schedules = list
		f.mu.Unlock()
		f.hub.touch(topicSchedules)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(scheduleSettle):
		}
	}
}

// sawFiring records an event of a schedule's firing, known by its request id.
func (f *feeds) sawFiring(ev *contract.Event) {
	name, at, ok := schedule.ParseFiringID(ev.RequestID)
	if !ok {
		return
	}
	f.mu.Lock()
	last := f.fired[name]
	if last == nil && len(f.fired) >= maxFired {
		f.mu.Unlock()
		return // a flood of made-up firing ids; keep memory bounded
	}
	isNew := last == nil || at.After(last.At)
	if isNew {
		f.fired[name] = &Firing{At: at, WorkflowID: ev.WorkflowID, ExecutionID: ev.ExecutionID}
	}
	once := false
	for _, s := range f.schedules {
		if s.Name == name {
			once = strings.HasPrefix(s.Schedule, "@at ")
		}
	}
	poke := f.pokeSchedules
	f.mu.Unlock()
	if isNew {
		f.hub.touch(topicSchedules)
		if once && poke != nil {
			poke()
		}
	}
}

// scheduleRows returns the schedules, by name, with their last firings.
func (f *feeds) scheduleRows(idx *index) []ScheduleRow {
	f.mu.RLock()
	rows := make([]ScheduleRow, 0, len(f.schedules))
	for _, s := range f.schedules {
		row := ScheduleRow{Schedule: s}
		// A request id that looks like a firing's, of another workflow, is not one.
		if last := f.fired[s.Name]; last != nil && last.WorkflowID == s.WorkflowID {
			c := *last
			row.Last = &c
		}
		rows = append(rows, row)
	}
	f.mu.RUnlock()
	for i := range rows {
		if l := rows[i].Last; l != nil {
			if e, ok := idx.get(l.WorkflowID, l.ExecutionID); ok {
				rows[i].LastStatus = e.Status
			}
		}
	}
	return rows
}

// schedulesData is the schedules view.
type schedulesData struct {
	Rows []ScheduleRow
}

func (s *Server) schedules(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "schedules", "Schedules", topicSchedules, topicExecutions)
	p.Data = &schedulesData{Rows: s.feeds.scheduleRows(s.idx)}
	s.views.render(w, r, http.StatusOK, "schedules", p)
}

// InputsJSON returns a schedule's inputs as JSON, "" when it has none.
func (r *ScheduleRow) InputsJSON() string {
	if len(r.Schedule.Inputs) == 0 {
		return ""
	}
	data, _ := json.Marshal(r.Schedule.Inputs)
	return string(data)
}
