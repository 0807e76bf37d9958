package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/schedule"
)

// firings returns, by request id, how many times each firing of schedule name
// started, and its terminal events.
func firings(h *harness, workflowID, name string) (started map[string]int, ended map[string]contract.Event) {
	started, ended = map[string]int{}, map[string]contract.Event{}
	for _, m := range h.messages(contract.StreamEvents, "flow.events.*."+workflowID+".>") {
		var ev contract.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			h.t.Fatal(err)
		}
		if !strings.HasPrefix(ev.ExecutionID, name+"-") {
			continue
		}
		switch {
		case ev.Type == contract.ExecutionStarted:
			started[ev.ExecutionID]++
		case contract.IsTerminalEvent(ev.Type):
			ended[ev.ExecutionID] = ev
		}
	}
	return started, ended
}

// firedAt reads the time of a firing from its request id.
func firedAt(t *testing.T, name, id string) time.Time {
	at, err := time.Parse("20060102T150405Z", strings.TrimPrefix(id, name+"-"))
	if err != nil {
		t.Fatalf("request id %s does not end with the firing's time: %v", id, err)
	}
	return at
}

// TestScheduleFiresOncePerSecondAcrossWorkers: a schedule @every 1s run by 3 worker
// processes fires once a second, none missing and none twice; a halt refuses its
// firings and the schedule goes on; a resume lets them run again.
func TestScheduleFiresOncePerSecondAcrossWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	f := newFleet(t, h.srv.URL())
	f.start("w1")
	f.start("w2")
	f.start("w3")
	h.deploy(`{"id": "tick", "nodes": [{"id": "t", "type": "transform", "config": {"outputs": {"n": "1"}}}]}`)
	const name = "every-sec"
	if err := h.client.Schedules().Add(h.ctx, schedule.Spec{Name: name, Every: time.Second,
		Request: contract.Request{WorkflowID: "tick", BotID: "b1"}}, false); err != nil {
		t.Fatal(err)
	}

	// 11 firings in a row: over 10 s.
	var ids []string
	natstest.WaitFor(t, time.Minute, func() error {
		_, ended := firings(h, "tick", name)
		ids = ids[:0]
		for id := range ended {
			ids = append(ids, id)
		}
		if len(ids) < 11 {
			return fmt.Errorf("%d firings ended", len(ids))
		}
		return nil
	})
	started, ended := firings(h, "tick", name)
	slices.Sort(ids)
	first, last := firedAt(t, name, ids[0]), firedAt(t, name, ids[len(ids)-1])
	for at := first; !at.After(last); at = at.Add(time.Second) {
		id := schedule.FiringID(name, at)
		if ev, ok := ended[id]; !ok || ev.Type != contract.ExecutionCompleted {
			t.Errorf("firing %s: %+v; want one completed execution each second from %s to %s", id, ev, first, last)
		}
		if started[id] != 1 {
			t.Errorf("firing %s started %d times, want once", id, started[id])
		}
	}

	h.command("global", "halt", "schedule test")
	haltedAt := time.Now()
	natstest.WaitFor(t, time.Minute, func() error {
		_, ended := firings(h, "tick", name)
		n := 0
		for id, ev := range ended {
			if firedAt(t, name, id).After(haltedAt.Add(time.Second)) {
				if ev.Type != contract.ExecutionHalted {
					return fmt.Errorf("firing %s during the halt ended %s", id, ev.Type)
				}
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d firings refused during the halt", n)
		}
		return nil
	})

	h.command("global", "resume", "schedule test")
	resumedAt := time.Now()
	natstest.WaitFor(t, time.Minute, func() error {
		_, ended := firings(h, "tick", name)
		for id, ev := range ended {
			if firedAt(t, name, id).After(resumedAt.Add(time.Second)) && ev.Type == contract.ExecutionCompleted {
				return nil
			}
		}
		return fmt.Errorf("no firing completed since the resume")
	})
	all, err := h.client.Schedules().List(h.ctx)
	if err != nil || len(all) != 1 || all[0].Paused || all[0].Schedule != "@every 1s" {
		t.Errorf("schedules %+v, %v; want %s active", all, err, name)
	}
}
