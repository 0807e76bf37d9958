package console

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/schedule"
)

func TestLastFiringIsTheNewestOfTheSchedulesWorkflow(t *testing.T) {
	idx := newIndex(100)
	f := newFeeds(nil, nil, contract.Subjects{Prefix: contract.DefaultPrefix}, idx, newHub(), Config{}, zerolog.Nop())
	f.schedules = []schedule.Schedule{{Name: "minute", WorkflowID: "wf"}, {Name: "idle", WorkflowID: "wf"}}
	at := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for _, ev := range []contract.Event{
		{Type: contract.ExecutionStarted, WorkflowID: "wf", RequestID: schedule.FiringID("minute", at.Add(time.Minute)), ExecutionID: "later"},
		{Type: contract.ExecutionCompleted, WorkflowID: "wf", RequestID: schedule.FiringID("minute", at), ExecutionID: "earlier"},
		{Type: contract.ExecutionStarted, WorkflowID: "other", RequestID: schedule.FiringID("idle", at), ExecutionID: "look-alike"},
		{Type: contract.ExecutionStarted, WorkflowID: "wf", RequestID: "req-1", ExecutionID: "req-1"},
	} {
		idx.apply(&ev)
		f.sawFiring(&ev)
	}
	rows := f.scheduleRows(idx)
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	if l := rows[0].Last; l == nil || l.ExecutionID != "later" || !l.At.Equal(at.Add(time.Minute)) || rows[0].LastStatus != "running" {
		t.Errorf("minute's last firing %+v (%s), want execution later at %s, running", l, rows[0].LastStatus, at.Add(time.Minute))
	}
	if rows[1].Last != nil {
		t.Errorf("idle's last firing %+v; a request id of another workflow is no firing of it", rows[1].Last)
	}
}
