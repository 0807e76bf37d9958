// Package schedule keeps workflow schedules in JetStream, with no scheduler
// process: a schedule is the last message on <prefix>.schedules.<name> in stream
// FLOW_SCHEDULES, whose Nats-Schedule header (@every, cron with a time zone, @at)
// makes the server itself store a copy, a firing, on
// <prefix>.fired.<workflow_id>.<name> at each due time. Workers take the firings
// through a durable consumer they share and handle each as an execution request
// whose request id is the schedule's name and the firing's time (see AsRequest),
// so that two firings never merge and a redelivered firing never runs twice.
package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/schemas"
)

// Errors of a Book.
var (
	// ErrNotFound: no schedule has that name.
	ErrNotFound = errors.New("schedule not found")
	// ErrExists: a schedule has that name already.
	ErrExists = errors.New("schedule exists")
	// ErrInvalid: the schedule cannot be stored as given.
	ErrInvalid = errors.New("invalid schedule")
)

// Spec is a schedule to add: a request to publish, and when. Exactly one of
// Every, Cron and At is set.
type Spec struct {
	Name    string
	Request contract.Request
	Every   time.Duration
	// Cron has 5 fields (minute first) or 6 (second first), or is @hourly,
	// @daily, @weekly, @monthly or @yearly.
	Cron string
	// TimeZone of Cron, an IANA name; default UTC.
	TimeZone string
	At       time.Time
}

// Schedule is a stored schedule.
type Schedule struct {
	Name       string         `json:"name"`
	WorkflowID string         `json:"workflow_id"`
	BotID      string         `json:"bot_id,omitempty"`
	StrategyID string         `json:"strategy_id,omitempty"`
	Inputs     map[string]any `json:"inputs,omitempty"`
	// Schedule is the Nats-Schedule pattern: @every 1m0s, a 6-field cron, @at <time>.
	Schedule string `json:"schedule"`
	TimeZone string `json:"time_zone,omitempty"`
	Paused   bool   `json:"paused"`
	PausedBy string `json:"paused_by,omitempty"`
	// Updated is when the schedule was last added, paused or resumed.
	Updated time.Time `json:"updated"`
}

// Book reads and writes the schedules of FLOW_SCHEDULES.
type Book struct {
	js       jetstream.JetStream
	subjects contract.Subjects
}

// New returns a book.
func New(js jetstream.JetStream, subjects contract.Subjects) *Book {
	return &Book{js: js, subjects: subjects}
}

// pattern returns the Nats-Schedule pattern and time zone of a spec.
func (s *Spec) pattern() (string, string, error) {
	set := 0
	for _, ok := range []bool{s.Every != 0, s.Cron != "", !s.At.IsZero()} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return "", "", fmt.Errorf("%w: give exactly one of --every, --cron and --at", ErrInvalid)
	}
	if s.TimeZone != "" && s.Cron == "" {
		return "", "", fmt.Errorf("%w: a time zone applies to --cron only", ErrInvalid)
	}
	switch {
	case s.Every != 0:
		if s.Every < time.Second || s.Every%time.Second != 0 {
			return "", "", fmt.Errorf("%w: --every %s must be whole seconds, at least 1s", ErrInvalid, s.Every)
		}
		return "@every " + s.Every.String(), "", nil
	case s.Cron != "":
		cron := strings.Join(strings.Fields(s.Cron), " ")
		switch n := len(strings.Fields(cron)); {
		case strings.HasPrefix(cron, "@"):
		case n == 5:
			cron = "0 " + cron // JetStream's cron counts seconds first
		case n != 6:
			return "", "", fmt.Errorf("%w: --cron %q has %d fields; write 5 (minute hour day month weekday, such as \"0 8 * * *\") or 6 (seconds first)", ErrInvalid, s.Cron, n)
		}
		if s.TimeZone != "" {
			if _, err := time.LoadLocation(s.TimeZone); err != nil {
				return "", "", fmt.Errorf("%w: time zone %q: %v; use an IANA name such as Europe/London", ErrInvalid, s.TimeZone, err)
			}
		}
		return cron, s.TimeZone, nil
	}
	if !s.At.After(time.Now()) {
		return "", "", fmt.Errorf("%w: --at %s is in the past", ErrInvalid, s.At.UTC().Format(time.RFC3339))
	}
	return "@at " + s.At.UTC().Format(time.RFC3339), "", nil
}

// Add stores a schedule; with replace, it replaces one of the same name.
func (b *Book) Add(ctx context.Context, spec Spec, replace bool) error {
	if err := checkName(spec.Name); err != nil {
		return err
	}
	pattern, zone, err := spec.pattern()
	if err != nil {
		return err
	}
	req := spec.Request
	req.RequestID, req.NotAfter = "", nil // each firing gets its own
	if err := contract.CheckID("workflow_id", req.WorkflowID); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := schemas.ValidateJSON(schemas.ExecutionRequest, body); err != nil {
		return fmt.Errorf("%w: the request %v", ErrInvalid, err)
	}
	if !replace {
		if _, err := b.last(ctx, spec.Name); err == nil {
			return fmt.Errorf("%w: %q; remove it first (schedule rm) or add it with --replace", ErrExists, spec.Name)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	msg := nats.NewMsg(b.subjects.Schedule(spec.Name))
	msg.Data = body
	msg.Header.Set(contract.HeaderSchedule, pattern)
	msg.Header.Set(contract.HeaderScheduleTarget, b.subjects.Fired(req.WorkflowID, spec.Name))
	if zone != "" {
		msg.Header.Set(contract.HeaderScheduleTimeZone, zone)
	}
	return b.publish(ctx, msg)
}

// publish stores a schedule message, explaining the server's refusals.
func (b *Book) publish(ctx context.Context, msg *nats.Msg) error {
	_, err := b.js.PublishMsg(ctx, msg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrSchedulePatternInvalid):
		return fmt.Errorf("%w: JetStream refuses the pattern %q (or its time zone): use @every 1m, a cron such as \"0 8 * * *\", or @at with a time", ErrInvalid, msg.Header.Get(contract.HeaderSchedule))
	case errors.Is(err, jetstream.ErrMessageSchedulesDisabled), errors.Is(err, jetstream.ErrNoStreamResponse):
		return fmt.Errorf("store schedule: %w; stream %s is missing or too old: start a worker of this version to create it (NATS 2.12 or later)", err, contract.StreamSchedules)
	}
	return fmt.Errorf("store schedule: %w", err)
}

func checkName(name string) error {
	if err := contract.CheckID("schedule name", name); err != nil || len(name) > contract.MaxScheduleName {
		return fmt.Errorf("%w: name %q must be 1 to %d of A-Z a-z 0-9 _ - (the request id of each firing is the name and its time)", ErrInvalid, name, contract.MaxScheduleName)
	}
	return nil
}

// last returns the message that holds a schedule.
func (b *Book) last(ctx context.Context, name string) (*jetstream.RawStreamMsg, error) {
	s, err := b.stream(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, b.subjects.Schedule(name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %q; list them with: publisher schedule ls", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read schedule %s: %w", name, err)
	}
	return m, nil
}

func (b *Book) stream(ctx context.Context) (jetstream.Stream, error) {
	s, err := b.js.Stream(ctx, contract.StreamSchedules)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s is missing: start a worker of this version to create it", contract.StreamSchedules)
	}
	return s, err
}

// Get returns a schedule.
func (b *Book) Get(ctx context.Context, name string) (*Schedule, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m, err := b.last(ctx, name)
	if err != nil {
		return nil, err
	}
	return decode(name, m)
}

func decode(name string, m *jetstream.RawStreamMsg) (*Schedule, error) {
	var req contract.Request
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return nil, fmt.Errorf("schedule %s holds no request: %v; replace it (schedule add --replace)", name, err)
	}
	s := &Schedule{Name: name, WorkflowID: req.WorkflowID, BotID: req.BotID, StrategyID: req.StrategyID, Inputs: req.Inputs, Updated: m.Time.UTC()}
	s.Schedule, s.TimeZone = m.Header.Get(contract.HeaderSchedule), m.Header.Get(contract.HeaderScheduleTimeZone)
	if s.Schedule == "" {
		s.Paused, s.PausedBy = true, m.Header.Get(contract.HeaderPausedBy)
		s.Schedule, s.TimeZone = m.Header.Get(contract.HeaderPausedSchedule), m.Header.Get(contract.HeaderPausedTimeZone)
	}
	return s, nil
}

// List returns every schedule, sorted by name.
func (b *Book) List(ctx context.Context) ([]Schedule, error) {
	s, err := b.stream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(b.subjects.SchedulesAll()))
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	prefix := b.subjects.Schedule("")
	out := make([]Schedule, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		name := strings.TrimPrefix(subject, prefix)
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read schedule %s: %w", name, err)
		}
		sc, err := decode(name, m)
		if err != nil {
			return nil, err
		}
		out = append(out, *sc)
	}
	slices.SortFunc(out, func(a, b Schedule) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Remove deletes a schedule; firings already stored still run.
func (b *Book) Remove(ctx context.Context, name string) error {
	if _, err := b.Get(ctx, name); err != nil {
		return err
	}
	s, err := b.stream(ctx)
	if err != nil {
		return err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(b.subjects.Schedule(name))); err != nil {
		return fmt.Errorf("remove schedule %s: %w", name, err)
	}
	return nil
}

// Pause stops a schedule's firings until Resume: its message is replaced by one
// that keeps the pattern under Flowguard-Paused-* headers, which JetStream does
// not fire.
func (b *Book) Pause(ctx context.Context, name, by string) error {
	sc, m, err := b.load(ctx, name)
	if err != nil {
		return err
	}
	if sc.Paused {
		return nil
	}
	msg := nats.NewMsg(b.subjects.Schedule(name))
	msg.Data = m.Data
	msg.Header.Set(contract.HeaderRollup, jetstream.MsgRollupSubject)
	msg.Header.Set(contract.HeaderPausedSchedule, sc.Schedule)
	if sc.TimeZone != "" {
		msg.Header.Set(contract.HeaderPausedTimeZone, sc.TimeZone)
	}
	if by != "" {
		msg.Header.Set(contract.HeaderPausedBy, by)
	}
	return b.publish(ctx, msg)
}

// Resume restarts a paused schedule; firings missed while paused are not made up.
func (b *Book) Resume(ctx context.Context, name string) error {
	sc, m, err := b.load(ctx, name)
	if err != nil {
		return err
	}
	if !sc.Paused {
		return nil
	}
	msg := nats.NewMsg(b.subjects.Schedule(name))
	msg.Data = m.Data
	msg.Header.Set(contract.HeaderSchedule, sc.Schedule)
	msg.Header.Set(contract.HeaderScheduleTarget, b.subjects.Fired(sc.WorkflowID, name))
	if sc.TimeZone != "" {
		msg.Header.Set(contract.HeaderScheduleTimeZone, sc.TimeZone)
	}
	return b.publish(ctx, msg)
}

func (b *Book) load(ctx context.Context, name string) (*Schedule, *jetstream.RawStreamMsg, error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	m, err := b.last(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	sc, err := decode(name, m)
	return sc, m, err
}
