// Package breakers shares a worker's circuit breakers over NATS. It publishes each
// state change of the worker's breakers on flow.breakers.<provider> and logs it;
// it makes the worker obey operators' orders (override.<provider> in the
// flow_breakers bucket: force open, close); and in cluster scope it writes the
// worker's changes to state.<provider> and follows the other workers' ones, so
// that a breaker opening on one worker fails calls fast on every worker.
//
// Why not gobreaker's DistributedCircuitBreaker: it holds a store-wide lock for
// the whole of every call and polls for that lock with 500 ms sleeps, so a
// provider's calls would run one at a time across the cluster, and one slow call
// would fail the others on lock timeouts. Here every worker keeps its own
// gobreaker breakers (no I/O per call) and only state changes cross the network.
package breakers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/resilience"
)

// Bounds of the I/O of a Sync.
const (
	loadTimeout  = 10 * time.Second // reading the bucket at start
	writeTimeout = 5 * time.Second  // one state written to KV
	flushTimeout = 2 * time.Second  // changes still queued at shutdown
)

// Board is what a Sync drives: the worker's breakers (*resilience.Breakers).
type Board interface {
	Force(provider string, h *resilience.Hold)
	Follow(provider string, h *resilience.Hold)
	Reset(provider string) resilience.State
}

// Publisher sends core NATS messages (*nats.Conn).
type Publisher interface {
	Publish(subject string, data []byte) error
}

// Config of a Sync.
type Config struct {
	WorkerID string
	// Scope is contract.BreakerScopeLocal or contract.BreakerScopeCluster.
	Scope    string
	Subjects contract.Subjects
	// OpenTime of the breakers: in cluster scope, how long the other workers wait
	// for the outcome of a half-open breaker's probe.
	OpenTime time.Duration
}

// Sync connects a worker's breakers to NATS. Notify is its listener of breaker
// changes; Run publishes them and applies the bucket's updates.
type Sync struct {
	kv  jetstream.KeyValue
	pub Publisher
	cfg Config
	log zerolog.Logger
	now func() time.Time

	mu    sync.Mutex
	queue []resilience.StateChange
	wake  chan struct{}
}

// New returns a Sync over the flow_breakers bucket.
func New(kv jetstream.KeyValue, pub Publisher, cfg Config, log zerolog.Logger) *Sync {
	return &Sync{kv: kv, pub: pub, cfg: cfg, log: log, now: time.Now, wake: make(chan struct{}, 1)}
}

// Notify queues a breaker's state change for Run. It never blocks, so it can be
// the chain's OnStateChange listener, which runs under the breaker's lock.
func (s *Sync) Notify(c resilience.StateChange) {
	s.mu.Lock()
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Watch is a watch of the flow_breakers bucket, made by Sync.Watch.
type Watch struct {
	board Board
	kw    jetstream.KeyWatcher
}

// Watch starts watching the bucket and applies its current content to board
// before it returns, so that a worker starting during a maintenance window never
// calls the provider. The watch lives until ctx ends.
func (s *Sync) Watch(ctx context.Context, board Board) (*Watch, error) {
	kw, err := kvstate.WatchLoaded(ctx, s.kv, loadTimeout, func(e jetstream.KeyValueEntry) { s.apply(board, e, false) })
	if err != nil {
		return nil, err
	}
	return &Watch{board: board, kw: kw}, nil
}

// Run publishes the breakers' changes and applies the bucket's updates until ctx
// ends; then it publishes the changes still queued, within a short bound.
func (s *Sync) Run(ctx context.Context, w *Watch) {
	defer func() { _ = w.kw.Stop() }()
	updates := w.kw.Updates()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			s.flush(flushCtx)
			cancel()
			return
		case <-s.wake:
			s.flush(ctx)
		case e, ok := <-updates:
			if !ok {
				// Only a closed connection ends an ordered consumer's watch.
				s.log.Error().Str("bucket", contract.BucketBreakers).Msg("breaker watch closed: operators' orders and other workers' breakers are no longer followed")
				updates = nil
				continue
			}
			if e != nil {
				s.apply(w.board, e, true)
			}
		}
	}
}

// flush publishes the queued changes, in order.
func (s *Sync) flush(ctx context.Context) {
	s.mu.Lock()
	queue := s.queue
	s.queue = nil
	s.mu.Unlock()
	for _, c := range queue {
		s.changed(ctx, c)
	}
}

// changed logs and publishes a change of one of the worker's breakers.
func (s *Sync) changed(ctx context.Context, c resilience.StateChange) {
	st := contract.BreakerState{
		Provider: c.Provider, State: string(c.To), Previous: string(c.From), WorkerID: s.cfg.WorkerID,
		Scope: s.cfg.Scope, Source: contract.BreakerSourceBreaker, Time: c.At.UTC(),
	}
	log := s.log.With().Str("provider", c.Provider).Str("from", string(c.From)).Str("to", string(c.To)).Logger()
	switch c.To {
	case resilience.StateOpen:
		until := c.Until.UTC()
		st.OpenUntil, st.Reason = &until, c.LastError
		log.Warn().Time("probe_at", until).Str("last_error", c.LastError).Msg("circuit breaker opened: calls to the provider fail at once")
	case resilience.StateHalfOpen:
		if s.cfg.Scope == contract.BreakerScopeCluster {
			until := c.At.Add(s.cfg.OpenTime).UTC()
			st.OpenUntil = &until
		}
		log.Info().Msg("circuit breaker half-open: a probe call tests the provider")
	default:
		log.Info().Msg("circuit breaker closed: calls to the provider resume")
	}
	data := s.publish(st)
	if data == nil || s.cfg.Scope != contract.BreakerScopeCluster {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if _, err := s.kv.Put(wctx, contract.BreakerStateKey(c.Provider), data); err != nil {
		log.Warn().Err(err).Msg("share breaker state with the cluster")
	}
}

// publish sends a state on flow.breakers.<provider> and returns it encoded, nil
// when it could not be encoded.
func (s *Sync) publish(st contract.BreakerState) []byte {
	data, err := json.Marshal(st)
	if err != nil {
		s.log.Error().Err(err).Str("provider", st.Provider).Msg("encode breaker state")
		return nil
	}
	if err := s.pub.Publish(s.cfg.Subjects.Breakers(st.Provider), data); err != nil {
		s.log.Warn().Err(err).Str("provider", st.Provider).Msg("publish breaker state")
	}
	return data
}

// apply applies one entry of the bucket; live entries arrived after the start.
func (s *Sync) apply(board Board, e jetstream.KeyValueEntry, live bool) {
	what, provider, ok := contract.ParseBreakerKey(e.Key())
	if !ok {
		return
	}
	deleted := e.Operation() != jetstream.KeyValuePut
	switch {
	case what == "override" && deleted:
		board.Force(provider, nil)
	case what == "override":
		var o contract.BreakerOverride
		if err := json.Unmarshal(e.Value(), &o); err != nil {
			s.log.Warn().Err(err).Str("key", e.Key()).Msg("ignoring an invalid breaker order; write it with: publisher breaker open|close")
			return
		}
		s.obey(board, provider, &o, live)
	case s.cfg.Scope != contract.BreakerScopeCluster:
		return // other workers' states are followed in cluster scope only
	case deleted:
		board.Follow(provider, nil)
	default:
		var st contract.BreakerState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			s.log.Warn().Err(err).Str("key", e.Key()).Msg("ignoring an invalid shared breaker state")
			return
		}
		s.follow(board, provider, &st)
	}
}

// obey applies an operator's order, and reports it when it arrived live.
func (s *Sync) obey(board Board, provider string, o *contract.BreakerOverride, live bool) {
	log := s.log.With().Str("provider", provider).Str("action", o.Action).Str("reason", o.Reason).Str("issued_by", o.IssuedBy).Logger()
	st := contract.BreakerState{
		Provider: provider, WorkerID: s.cfg.WorkerID, Scope: s.cfg.Scope,
		Source: contract.BreakerSourceOperator, Time: s.now().UTC(), Reason: o.Reason,
	}
	switch o.Action {
	case contract.BreakerActionOpen:
		why := fmt.Sprintf("forced open by an operator (%s at %s): %s", orUnknown(o.IssuedBy), o.IssuedAt.UTC().Format(time.RFC3339), o.Reason)
		hold := &resilience.Hold{Why: why + "; close it with: publisher breaker close " + provider}
		if o.Until != nil {
			hold.Until = *o.Until
			hold.Why = why + "; until " + o.Until.UTC().Format(time.RFC3339)
		}
		board.Force(provider, hold)
		log.Warn().Msg("provider breaker forced open by an operator")
		st.State, st.OpenUntil = contract.BreakerOpen, o.Until
	case contract.BreakerActionClose:
		board.Force(provider, nil)
		board.Follow(provider, nil)
		st.Previous = string(board.Reset(provider))
		st.State = contract.BreakerClosed
		log.Info().Msg("provider breaker closed by an operator")
	default:
		log.Warn().Msg("ignoring a breaker order with an unknown action; use open or close")
		return
	}
	if live {
		s.publish(st)
	}
}

// follow applies another worker's breaker state (cluster scope).
func (s *Sync) follow(board Board, provider string, st *contract.BreakerState) {
	if st.WorkerID == s.cfg.WorkerID {
		return // our own report
	}
	log := s.log.With().Str("provider", provider).Str("state", st.State).Str("by_worker", st.WorkerID).Logger()
	open := st.State == contract.BreakerOpen || st.State == contract.BreakerHalfOpen
	if !open || st.OpenUntil == nil || !s.now().Before(*st.OpenUntil) {
		board.Follow(provider, nil)
		log.Debug().Msg("following the cluster: provider breaker not open elsewhere")
		return
	}
	why := fmt.Sprintf("open on worker %s (cluster scope)", st.WorkerID)
	if st.State == contract.BreakerHalfOpen {
		why = fmt.Sprintf("half-open on worker %s (cluster scope), whose probe is testing the provider", st.WorkerID)
	}
	if st.Reason != "" {
		why += "; last failure: " + st.Reason
	}
	board.Follow(provider, &resilience.Hold{Why: why + "; calls resume at " + st.OpenUntil.UTC().Format(time.RFC3339), Until: *st.OpenUntil})
	log.Warn().Time("until", *st.OpenUntil).Msg("provider breaker open on another worker: failing fast here too")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
