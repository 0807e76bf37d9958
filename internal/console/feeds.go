package console

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/metrics"
	"github.com/flowguard/flowguard/internal/schedule"
)

// workerService is the micro service every worker registers as.
const workerService = "flowguard-worker"

// Bounds of what the console keeps besides executions.
const (
	maxHistory     = 1000
	maxDeadLetters = 1000
	// maxFired bounds the schedules whose last firing is kept.
	maxFired = 10000
)

// DeadLetter is a dead letter with its FLOW_DLQ sequence.
type DeadLetter struct {
	Seq uint64
	contract.DeadLetter
}

// WorkerStatus is what a worker answers to micro discovery.
type WorkerStatus struct {
	ID          string
	Version     string
	Concurrency int
	Started     time.Time
	Ready       bool
	NotReady    string
	Counts      metrics.Counts
	Emergency   emergency.Board
	// Seen is when the worker last answered.
	Seen time.Time
}

// Load is the share of the worker's concurrency in use, 0 to 1.
func (w *WorkerStatus) Load() float64 {
	if w.Concurrency <= 0 {
		return 0
	}
	return min(1, float64(w.Counts.InFlight)/float64(w.Concurrency))
}

// BreakerView is what the console knows about one provider's breaker.
type BreakerView struct {
	client.BreakerStatus
	// Workers holds the last change each worker reported on the provider's
	// breaker subject since the console started, by worker id.
	Workers map[string]contract.BreakerState
}

// feeds follows the contract's streams, buckets and services, and keeps what the
// pages show. It is safe for concurrent use.
type feeds struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects contract.Subjects
	idx      *index
	hub      *hub
	log      zerolog.Logger
	window   time.Duration
	interval time.Duration

	mu       sync.RWMutex
	board    emergency.Board
	history  []client.Command
	dlq      []DeadLetter
	breakers map[string]*BreakerView
	limits   map[string][]contract.RiskLimit
	metrics  map[string]*contract.RiskMetrics
	fleet    map[string]*WorkerStatus
	// schedules are those of FLOW_SCHEDULES, by name; fired holds the last
	// firing seen of each; pokeSchedules makes followSchedules read them again.
	schedules     []schedule.Schedule
	fired         map[string]*Firing
	pokeSchedules func()
	// applied records, per scope, when every worker had applied the scope's
	// last command (see markApplied).
	applied map[string]appliedMark
}

// appliedMark is when the last worker applied command Seq.
type appliedMark struct {
	Seq uint64
	At  time.Time
}

func newFeeds(nc *nats.Conn, js jetstream.JetStream, subjects contract.Subjects, idx *index, h *hub, cfg Config, log zerolog.Logger) *feeds {
	return &feeds{nc: nc, js: js, subjects: subjects, idx: idx, hub: h, log: log, window: cfg.Window, interval: cfg.FleetInterval,
		board: emergency.Board{}, breakers: map[string]*BreakerView{},
		limits: map[string][]contract.RiskLimit{}, metrics: map[string]*contract.RiskMetrics{}, fleet: map[string]*WorkerStatus{},
		applied: map[string]appliedMark{}, fired: map[string]*Firing{}}
}

// run follows everything until ctx ends.
func (f *feeds) run(ctx context.Context) {
	var wg sync.WaitGroup
	for name, fn := range map[string]func(context.Context) error{
		"events":    f.followEvents,
		"emergency": f.followEmergency,
		"dlq":       f.followDLQ,
		"breakers":  f.watchBreakers,
		"risk":      f.watchRisk,
		"fleet":     f.discover,
		"schedules": f.followSchedules,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.keep(ctx, name, fn)
		}()
	}
	sub, err := f.nc.Subscribe(f.subjects.BreakersAll(), f.breakerChange)
	if err != nil {
		f.log.Error().Err(err).Msg("cannot subscribe to breaker changes; per-worker breaker states will not show")
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	wg.Wait()
}

// keep runs fn again, with a growing pause, each time it returns before ctx ends.
func (f *feeds) keep(ctx context.Context, name string, fn func(context.Context) error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 250*time.Millisecond, 5*time.Second, 0
	for ctx.Err() == nil {
		started := time.Now()
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			b.Reset()
		}
		f.log.Warn().Err(err).Str("feed", name).Msg("console feed stopped; following it again")
		select {
		case <-ctx.Done():
		case <-time.After(b.NextBackOff()):
		}
	}
}

// follow calls fn with each message of stream matching filter from the start cfg
// says, and from the message after the last one seen when it follows again.
func (f *feeds) follow(ctx context.Context, stream, filter string, cfg jetstream.OrderedConsumerConfig, last *uint64, fn func(jetstream.Msg, *jetstream.MsgMetadata)) error {
	cfg.FilterSubjects = []string{filter}
	if *last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, *last+1, nil
	}
	cons, err := f.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return client.ErrNotProvisioned
		}
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		*last = meta.Sequence.Stream
		fn(m, meta)
	}
}

func (f *feeds) followEvents(ctx context.Context) error {
	start := time.Now().Add(-f.window)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start}
	var last uint64
	return f.follow(ctx, contract.StreamEvents, f.subjects.EventsAll(), cfg, &last, func(m jetstream.Msg, _ *jetstream.MsgMetadata) {
		var ev contract.Event
		if json.Unmarshal(m.Data(), &ev) != nil || ev.ExecutionID == "" || ev.WorkflowID == "" {
			return // not an event of this contract
		}
		f.idx.apply(&ev)
		f.sawFiring(&ev)
		f.hub.touch(topicExecutions)
		f.hub.touch(topicExecution + ev.ExecutionID)
	})
}

func (f *feeds) followEmergency(ctx context.Context) error {
	var last uint64
	prefix := f.subjects.Emergency("")
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	return f.follow(ctx, contract.StreamEmergency, f.subjects.EmergencyAll(), cfg, &last, func(m jetstream.Msg, meta *jetstream.MsgMetadata) {
		tail := strings.TrimPrefix(m.Subject(), prefix)
		cmd := client.Command{EmergencyCommand: emergency.DecodeCommand(m.Data()), Seq: meta.Sequence.Stream, Stored: meta.Timestamp}
		cmd.Scope, cmd.Auto = emergency.SubjectScope(tail)
		if cmd.Auto {
			cmd.Action = emergency.ActionHalt // a worker's automatic halt, whatever it says
		}
		f.mu.Lock()
		f.board.ApplyMessage(tail, m.Data(), meta.Sequence.Stream)
		f.history = appendBounded(f.history, cmd, maxHistory)
		f.mu.Unlock()
		f.hub.touch(topicEmergency)
		f.hub.touch(topicRisk) // auto-halts show beside the limits
	})
}

func (f *feeds) followDLQ(ctx context.Context) error {
	var last uint64
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	return f.follow(ctx, contract.StreamDLQ, f.subjects.DLQAll(), cfg, &last, func(m jetstream.Msg, meta *jetstream.MsgMetadata) {
		dl := DeadLetter{Seq: meta.Sequence.Stream}
		if json.Unmarshal(m.Data(), &dl.DeadLetter) != nil {
			dl.Kind, dl.Reason, dl.Payload = "unreadable", "the dead letter is not JSON", string(m.Data())
		}
		f.mu.Lock()
		f.dlq = appendBounded(f.dlq, dl, maxDeadLetters)
		f.mu.Unlock()
		f.hub.touch(topicDLQ)
	})
}

func appendBounded[T any](s []T, v T, max int) []T {
	s = append(s, v)
	if len(s) > max {
		s = slices.Clone(s[len(s)-max:])
	}
	return s
}

// watch calls fn with each entry of bucket, nil entries once the current values
// are delivered, until ctx ends or the watch breaks.
func (f *feeds) watch(ctx context.Context, bucket string, fn func(jetstream.KeyValueEntry)) error {
	kv, err := f.js.KeyValue(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return client.ErrNotProvisioned
		}
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch of " + bucket + " ended")
			}
			if e != nil {
				fn(e)
			}
		}
	}
}

func deleted(e jetstream.KeyValueEntry) bool {
	return e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
}

func (f *feeds) watchBreakers(ctx context.Context) error {
	return f.watch(ctx, contract.BucketBreakers, func(e jetstream.KeyValueEntry) {
		what, provider, ok := contract.ParseBreakerKey(e.Key())
		if !ok {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		v := f.breakerView(provider)
		switch {
		case what == "override" && deleted(e):
			v.Override = nil
		case what == "override":
			var o contract.BreakerOverride
			if json.Unmarshal(e.Value(), &o) == nil {
				v.Override = &o
			}
		case deleted(e):
			v.Shared = nil
		default:
			var st contract.BreakerState
			if json.Unmarshal(e.Value(), &st) == nil {
				v.Shared = &st
			}
		}
		f.hub.touch(topicProviders)
	})
}

// breakerChange records a worker's breaker state change.
func (f *feeds) breakerChange(m *nats.Msg) {
	var st contract.BreakerState
	if json.Unmarshal(m.Data, &st) != nil || contract.CheckID("provider", st.Provider) != nil {
		return
	}
	f.mu.Lock()
	f.breakerView(st.Provider).Workers[st.WorkerID] = st
	f.mu.Unlock()
	f.hub.touch(topicProviders)
}

// breakerView returns a provider's view, made when missing; f.mu is held.
func (f *feeds) breakerView(provider string) *BreakerView {
	v := f.breakers[provider]
	if v == nil {
		v = &BreakerView{BreakerStatus: client.BreakerStatus{Provider: provider}, Workers: map[string]contract.BreakerState{}}
		f.breakers[provider] = v
	}
	return v
}

func (f *feeds) watchRisk(ctx context.Context) error {
	return f.watch(ctx, contract.BucketRisk, func(e jetstream.KeyValueEntry) {
		kind, name, _ := strings.Cut(e.Key(), ".")
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case kind == "limits" && deleted(e):
			delete(f.limits, name)
		case kind == "limits":
			var doc contract.RiskLimits
			if json.Unmarshal(e.Value(), &doc) == nil {
				f.limits[name] = doc.Limits
			}
		case kind == "metrics" && deleted(e):
			delete(f.metrics, name)
		case kind == "metrics":
			var m contract.RiskMetrics
			if json.Unmarshal(e.Value(), &m) == nil {
				f.metrics[name] = &m
			}
		}
		f.hub.touch(topicRisk)
	})
}

// discover asks the workers for their status every interval. Micro services
// answer requests and publish nothing, so this is the one feed that asks.
func (f *feeds) discover(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		if err := f.discoverOnce(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// workerGone is how many discovery intervals a worker may miss before it is
// dropped from the fleet.
const workerGone = 30

func (f *feeds) discoverOnce(ctx context.Context) error {
	subject, err := micro.ControlSubject(micro.StatsVerb, workerService, "")
	if err != nil {
		return err
	}
	inbox := f.nc.NewRespInbox()
	sub, err := f.nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := f.nc.PublishRequest(subject, inbox, nil); err != nil {
		return err
	}
	// Answers come at once; wait a little for the slow ones.
	deadline := time.Now().Add(min(f.interval/2, time.Second))
	seen := map[string]*WorkerStatus{}
	for {
		wait := time.Until(deadline)
		if wait <= 0 || ctx.Err() != nil {
			break
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			break
		}
		if w := f.decodeStats(m.Data); w != nil {
			seen[w.ID] = w
		}
	}
	f.mu.Lock()
	maps.Copy(f.fleet, seen)
	for id, w := range f.fleet {
		if time.Since(w.Seen) > workerGone*f.interval {
			delete(f.fleet, id)
		}
	}
	f.markApplied(seen)
	f.mu.Unlock()
	f.hub.touch(topicFleet)
	f.hub.touch(topicEmergency) // which workers applied the last commands
	return nil
}

// markApplied records the scopes whose last command every worker that answered
// has applied, and when the last of them did (the applied_at they report; when
// one reports none, when this console saw it); f.mu is held.
func (f *feeds) markApplied(answered map[string]*WorkerStatus) {
	if len(answered) == 0 {
		return
	}
	for scope, st := range f.board {
		if f.applied[scope].Seq == st.Seq {
			continue
		}
		all := true
		var last time.Time
		for _, w := range answered {
			ws, ok := w.Emergency[scope]
			if !ok || ws.Seq < st.Seq {
				all = false
				break
			}
			if at := cmp.Or(ws.AppliedAt, w.Seen); at.After(last) {
				last = at
			}
		}
		if all {
			f.applied[scope] = appliedMark{Seq: st.Seq, At: last}
		}
	}
}

// decodeStats reads a worker's micro stats; nil for another prefix's workers or
// for something else.
func (f *feeds) decodeStats(data []byte) *WorkerStatus {
	var st micro.Stats
	if json.Unmarshal(data, &st) != nil || st.Name != workerService || st.Metadata["prefix"] != f.subjects.Prefix {
		return nil
	}
	w := &WorkerStatus{ID: st.Metadata["worker_id"], Version: st.Version, Started: st.Started, Seen: time.Now()}
	if w.ID == "" {
		w.ID = st.ID
	}
	_ = json.Unmarshal([]byte(st.Metadata["concurrency"]), &w.Concurrency)
	for _, ep := range st.Endpoints {
		var doc struct {
			Ready     bool            `json:"ready"`
			NotReady  string          `json:"not_ready"`
			Counts    metrics.Counts  `json:"executions"`
			Emergency emergency.Board `json:"emergency"`
		}
		if len(ep.Data) > 0 && json.Unmarshal(ep.Data, &doc) == nil {
			w.Ready, w.NotReady, w.Counts, w.Emergency = doc.Ready, doc.NotReady, doc.Counts, doc.Emergency
			break
		}
	}
	return w
}
