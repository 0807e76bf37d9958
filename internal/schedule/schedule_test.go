package schedule

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/provision"
)

func book(t *testing.T) *Book {
	t.Helper()
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv.URL())
	if _, err := provision.Ensure(context.Background(), js, provision.Config{}); err != nil {
		t.Fatal(err)
	}
	return New(js, contract.Subjects{Prefix: "flow"})
}

func TestBookAddListPauseResumeRemove(t *testing.T) {
	b := book(t)
	ctx := context.Background()
	req := contract.Request{WorkflowID: "wf", BotID: "b1", Inputs: map[string]any{"symbol": "BTCUSDT"}}
	if err := b.Add(ctx, Spec{Name: "daily", Request: req, Cron: "0 8 * * *", TimeZone: "Europe/London"}, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, Spec{Name: "minute", Request: req, Every: time.Minute}, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, Spec{Name: "minute", Request: req, Every: time.Hour}, false); !errors.Is(err, ErrExists) {
		t.Errorf("adding a name twice: %v, want ErrExists", err)
	}
	if err := b.Pause(ctx, "daily", "ops"); err != nil {
		t.Fatal(err)
	}
	all, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name != "daily" || !all[0].Paused || all[0].PausedBy != "ops" || all[0].Schedule != "0 0 8 * * *" ||
		all[0].TimeZone != "Europe/London" || all[0].Inputs["symbol"] != "BTCUSDT" || all[1].Name != "minute" || all[1].Paused || all[1].Schedule != "@every 1m0s" {
		t.Fatalf("schedules %+v", all)
	}
	if err := b.Resume(ctx, "daily"); err != nil {
		t.Fatal(err)
	}
	if sc, err := b.Get(ctx, "daily"); err != nil || sc.Paused || sc.Schedule != "0 0 8 * * *" || sc.TimeZone != "Europe/London" {
		t.Errorf("resumed %+v, %v", sc, err)
	}
	if err := b.Remove(ctx, "minute"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "minute"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed schedule: %v, want ErrNotFound", err)
	}
	if err := b.Pause(ctx, "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("pause of an unknown schedule: %v", err)
	}
}

func TestBookRefusesInvalidSchedules(t *testing.T) {
	b := book(t)
	req := contract.Request{WorkflowID: "wf"}
	for name, spec := range map[string]Spec{
		"no when":        {Name: "a", Request: req},
		"two whens":      {Name: "a", Request: req, Every: time.Minute, Cron: "* * * * *"},
		"sub-second":     {Name: "a", Request: req, Every: 1500 * time.Millisecond},
		"cron fields":    {Name: "a", Request: req, Cron: "* * *"},
		"bad cron":       {Name: "a", Request: req, Cron: "99 * * * *"},
		"zone of every":  {Name: "a", Request: req, Every: time.Minute, TimeZone: "UTC"},
		"unknown zone":   {Name: "a", Request: req, Cron: "0 8 * * *", TimeZone: "Mars/Olympus"},
		"past":           {Name: "a", Request: req, At: time.Now().Add(-time.Hour)},
		"long name":      {Name: "a123456789012345678901234567890123456789x", Request: req, Every: time.Minute},
		"dotted name":    {Name: "a.b", Request: req, Every: time.Minute},
		"no workflow":    {Name: "a", Every: time.Minute},
		"invalid inputs": {Name: "a", Request: contract.Request{WorkflowID: "wf", BotID: "bad bot"}, Every: time.Minute},
	} {
		if err := b.Add(context.Background(), spec, false); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestFiringIDAndLateness(t *testing.T) {
	fired := time.Date(2026, 11, 30, 8, 0, 0, 300e6, time.UTC)
	if id := FiringID("daily", fired); id != "daily-20261130T080000Z" {
		t.Errorf("id %s", id)
	}
	if err := contract.CheckID("request_id", FiringID("a123456789012345678901234567890123456789", fired)); err != nil {
		t.Errorf("the longest name makes an invalid id: %v", err)
	}
	next := func(d time.Duration) nats.Header {
		return nats.Header{contract.HeaderScheduleNext: []string{fired.Add(d).Format(time.RFC3339Nano)}}
	}
	cases := []struct {
		name string
		now  time.Time
		h    nats.Header
		late bool
	}{
		{"on time", fired.Add(100 * time.Millisecond), next(time.Second), false},
		{"a few seconds late, every second", fired.Add(5 * time.Second), next(time.Second), false},
		{"after an outage, every second", fired.Add(time.Minute), next(time.Second), true},
		{"half an hour late, hourly", fired.Add(90 * time.Minute), next(time.Hour), false},
		{"a day late, hourly", fired.Add(24 * time.Hour), next(time.Hour), true},
		{"one-off", fired.Add(24 * time.Hour), nats.Header{contract.HeaderScheduleNext: []string{"purge"}}, false},
	}
	for _, tc := range cases {
		if got := lateness(tc.h, fired, tc.now) != ""; got != tc.late {
			t.Errorf("%s: late %v, want %v", tc.name, got, tc.late)
		}
	}
}

func TestParseFiringIDReadsWhatFiringIDMade(t *testing.T) {
	at := time.Date(2026, 11, 30, 8, 0, 5, 0, time.UTC)
	for _, name := range []string{"btc-minute", "a", "x-20261130T080000Z"} {
		got, fired, ok := ParseFiringID(FiringID(name, at))
		if !ok || got != name || !fired.Equal(at) {
			t.Errorf("ParseFiringID(FiringID(%q)) = %q, %s, %v", name, got, fired, ok)
		}
	}
	for _, id := range []string{"", "req-1", "-20261130T080000Z", "btc-20261330T080000Z", "btc_20261130T080000Z", "b.c-20261130T080000Z"} {
		if name, _, ok := ParseFiringID(id); ok {
			t.Errorf("ParseFiringID(%q) = %q, want no firing", id, name)
		}
	}
}
