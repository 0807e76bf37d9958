// Package risk keeps the pre-trade risk controls: limits (limits.go), bots'
// metrics and the trading day, and the exposure orders reserve before they are
// published (reserve.go). A breached limit with auto_halt halts its scope through
// package emergency.
package risk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/schemas"
)

// ErrRiskUnknown is returned by CheckOrder while the risk limits and metrics are not
// loaded (see Risk.Ready): an order must not pass unchecked. It is transient.
var ErrRiskUnknown = errors.New("risk limits are not loaded yet, so the order cannot be checked against them; it will be retried")

// HaltPublisher stores an emergency command, deduplicated by its message id.
type HaltPublisher interface {
	Msg(ctx context.Context, subject, msgID, correlationID string, data []byte) (*jetstream.PubAck, error)
}

// RiskConfig configures risk limits.
type RiskConfig struct {
	Subjects contract.Subjects
	Day      TradingDay
	// Limits from the worker's configuration, by scope; they apply beside those in KV.
	Limits map[string][]contract.RiskLimit
	// IssuedBy names the halts this worker publishes.
	IssuedBy string
	// ReservationTTL is how long an order's reserved exposure counts unless a
	// metrics update of its bot settles it first; default DefaultReservationTTL.
	ReservationTTL time.Duration
}

// Risk evaluates risk limits on every metrics change and before every order, and
// halts the limit's scope when a limit with auto_halt is breached. With several
// workers, each publishes the same halt with the same message id: one is stored.
type Risk struct {
	kv   jetstream.KeyValue
	ctrl *emergency.Controller
	pub  HaltPublisher
	cfg  RiskConfig
	log  zerolog.Logger
	now  func() time.Time

	ready atomic.Bool
	// applied is the flow_risk revision of the last entry applied (see Revision).
	applied atomic.Uint64

	botLocks sync.Map // bot id -> *sync.Mutex, see reserve

	mu      sync.Mutex
	base    map[string][]compiledLimit // from configuration
	limits  map[string]scopeLimits     // from KV, by scope
	metrics map[string]metricsEntry    // by bot
}

type scopeLimits struct {
	limits   []compiledLimit
	revision uint64
}

type metricsEntry struct {
	m        *contract.RiskMetrics
	revision uint64
}

// NewRisk checks the configured limits and returns a Risk over the flow_risk bucket.
func NewRisk(kv jetstream.KeyValue, ctrl *emergency.Controller, pub HaltPublisher, cfg RiskConfig, log zerolog.Logger) (*Risk, error) {
	if cfg.ReservationTTL <= 0 {
		cfg.ReservationTTL = DefaultReservationTTL
	}
	r := &Risk{kv: kv, ctrl: ctrl, pub: pub, cfg: cfg, log: log, now: time.Now,
		base: map[string][]compiledLimit{}, limits: map[string]scopeLimits{}, metrics: map[string]metricsEntry{}}
	for scope, ls := range cfg.Limits {
		if err := CheckLimitScope(scope); err != nil {
			return nil, fmt.Errorf("risk limits: %w", err)
		}
		compiled, err := CompileLimits(ls)
		if err != nil {
			return nil, fmt.Errorf("risk limits of %s: %w", scope, err)
		}
		r.base[scope] = compiled
	}
	return r, nil
}

// Ready reports whether the risk state is loaded: true once the current watch of the
// flow_risk bucket has delivered its initial values (every limit and metrics key),
// false before that and again while a broken watch is being rebuilt. While it is
// false, CheckOrder refuses orders that are not reduce-only with ErrRiskUnknown; a
// worker should not take requests that may trade before it is true.
func (r *Risk) Ready() bool { return r.ready.Load() }

// Revision returns the flow_risk bucket revision of the last limits or metrics
// entry applied: a change written at revision rev is in force once Revision is rev
// or more.
func (r *Risk) Revision() uint64 { return r.applied.Load() }

// Run watches limits and metrics until ctx ends, rebuilding the watch when it breaks.
func (r *Risk) Run(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		r.log.Warn().Err(err).Msg("risk watch restarting")
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Risk) watch(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", contract.BucketRisk, err)
	}
	defer w.Stop()
	defer r.ready.Store(false)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return errors.New("risk watch closed")
			case e == nil: // the initial values are in
				r.ready.Store(true)
			default:
				r.applyEntry(ctx, e)
			}
		}
	}
}

// applyEntry records a changed limits or metrics key and evaluates what it affects.
func (r *Risk) applyEntry(ctx context.Context, e jetstream.KeyValueEntry) {
	defer r.recordApplied(e.Revision())
	kind, name, _ := strings.Cut(e.Key(), ".")
	deleted := e.Operation() != jetstream.KeyValuePut
	switch kind {
	case "limits":
		if err := CheckLimitScope(name); err != nil {
			r.log.Error().Err(err).Str("key", e.Key()).Msg("risk limits of a scope they cannot apply to ignored")
			return
		}
		r.mu.Lock()
		if deleted {
			delete(r.limits, name)
		} else if limits, err := ParseLimits(e.Value()); err != nil {
			r.log.Error().Err(err).Str("key", e.Key()).Msg("invalid risk limits ignored; the previous ones stay in force")
		} else {
			r.limits[name] = scopeLimits{limits: limits, revision: e.Revision()}
		}
		bots := make([]string, 0, len(r.metrics))
		for bot := range r.metrics {
			bots = append(bots, bot)
		}
		r.mu.Unlock()
		for _, bot := range bots {
			r.evaluate(ctx, bot)
		}
	case "metrics":
		r.mu.Lock()
		if deleted {
			delete(r.metrics, name)
			r.mu.Unlock()
			return
		}
		var m contract.RiskMetrics
		err := schemas.ValidateJSON(schemas.RiskMetrics, e.Value())
		if err == nil {
			err = json.Unmarshal(e.Value(), &m)
		}
		if err != nil {
			r.mu.Unlock()
			r.log.Error().Err(err).Str("key", e.Key()).Msg("invalid risk metrics ignored")
			return
		}
		m.BotID = name
		r.metrics[name] = metricsEntry{m: &m, revision: e.Revision()}
		r.mu.Unlock()
		r.evaluate(ctx, name)
	}
}

// recordApplied raises the applied revision to rev. A rebuilt watch delivers each
// key's last value again, older than revisions already applied: those leave it.
func (r *Risk) recordApplied(rev uint64) {
	for {
		cur := r.applied.Load()
		if rev <= cur || r.applied.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// applicable returns the limits that apply to a bot's metrics, with their scope and a
// version token of the limits (for deterministic halt message ids).
func (r *Risk) applicable(m *contract.RiskMetrics) (scopes []string, limits [][]compiledLimit, versions []string) {
	cover := emergency.Scopes{BotID: m.BotID, StrategyID: m.StrategyID}.List()
	for _, scope := range cover {
		if base := r.base[scope]; len(base) > 0 {
			scopes, limits, versions = append(scopes, scope), append(limits, base), append(versions, "cfg")
		}
		if kv, ok := r.limits[scope]; ok {
			scopes, limits, versions = append(scopes, scope), append(limits, kv.limits), append(versions, "l"+strconv.FormatUint(kv.revision, 10))
		}
	}
	return scopes, limits, versions
}

// evaluate checks a bot's latest metrics and halts on breaches with auto_halt.
func (r *Risk) evaluate(ctx context.Context, bot string) {
	r.mu.Lock()
	entry, ok := r.metrics[bot]
	if !ok {
		r.mu.Unlock()
		return
	}
	day := r.cfg.Day.Of(r.now())
	scopes, limits, versions := r.applicable(entry.m)
	var breaches []*Breach
	var ids []string
	for i, scope := range scopes {
		for j := range limits[i] {
			if b := limits[i][j].check(scope, entry.m, day); b != nil {
				breaches = append(breaches, b)
				ids = append(ids, fmt.Sprintf("risk.%s.%s.%s.m%d", scope, b.Limit.ID, versions[i], entry.revision))
			}
		}
	}
	r.mu.Unlock()
	for i, b := range breaches {
		r.logUncheckable(b)
		if !b.Limit.AutoHalt {
			r.log.Warn().Str("bot_id", bot).Str("limit", b.Limit.ID).Str("reason", b.Reason()).Msg("risk limit breached; orders will be refused")
			continue
		}
		if err := r.halt(ctx, b, ids[i]); err != nil {
			r.log.Error().Err(err).Str("limit", b.Limit.ID).Msg("publish risk halt failed")
		}
	}
}

// logUncheckable logs a limit that could not be checked: its expression needs a fix,
// or a bot a metric, before trading resumes.
func (r *Risk) logUncheckable(b *Breach) {
	if b.Err != nil {
		r.log.Error().Err(b.Err).Str("bot_id", b.BotID).Str("scope", b.Scope).Str("limit", b.Limit.ID).
			Str("expression", b.Limit.Expression).Msg("risk limit cannot be checked; counted as breached")
	}
}

// halt publishes a halt for the breach's scope unless it is already halted.
func (r *Risk) halt(ctx context.Context, b *Breach, msgID string) error {
	if st := r.ctrl.Board().Get(b.Scope); st.State == emergency.Halted {
		return nil
	}
	cmd := contract.EmergencyCommand{Action: emergency.ActionHalt, Reason: b.Reason(), IssuedBy: r.cfg.IssuedBy, IssuedAt: r.now().UTC()}
	data, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if _, err := r.pub.Msg(ctx, r.cfg.Subjects.AutoHalt(b.Scope), msgID, "risk_"+b.Limit.ID, data); err != nil {
		return err
	}
	r.log.Warn().Str("scope", b.Scope).Str("limit", b.Limit.ID).Str("reason", b.Reason()).Msg("risk limit breached; halt published")
	return nil
}

// CheckOrder evaluates the limits covering an order's bot with the order included,
// and, when a limit reads positions, the orders of the bot reserved before it that
// its metrics do not show yet; an order that passes is then reserved in turn (see
// reserve). Reduce-only orders are
// exempt: they lower exposure. A breach returns a *RiskError, after halting the
// limit's scope when the limit has auto_halt. An order without a price under a
// notional position limit is refused with a *RiskError too, without a halt: it
// cannot be valued. Before the limits are loaded (see Ready), it returns
// ErrRiskUnknown; when the reservation cannot be written, an error matching
// ErrReserve.
func (r *Risk) CheckOrder(ctx context.Context, o *contract.OrderIntent) error {
	if o.ReduceOnly {
		return nil
	}
	if !r.Ready() {
		return ErrRiskUnknown
	}
	var breach *Breach
	var unpriced bool
	if r.exposureLimited(o) {
		if err := r.reserve(ctx, o, func(held []contract.Reservation) bool {
			breach, unpriced = r.checkWith(o, held)
			return breach == nil
		}); err != nil {
			return err
		}
	} else {
		breach, unpriced = r.checkWith(o, nil)
	}
	switch {
	case breach == nil:
		return nil
	case unpriced:
		return &RiskError{Breach: breach}
	}
	r.logUncheckable(breach)
	if !breach.Limit.AutoHalt {
		return &RiskError{Breach: breach}
	}
	if err := r.halt(ctx, breach, fmt.Sprintf("risk.%s.%s.order.%s", breach.Scope, breach.Limit.ID, o.ClientOrderID)); err != nil {
		return fmt.Errorf("%w (and publishing its halt failed: %v)", &RiskError{Breach: breach}, err)
	}
	return &RiskError{Breach: breach, Halted: true}
}

// exposureLimited reports whether a limit covering the order's bot reads
// positions (a position_size or custom limit): only then can orders racing pass it
// together, and only then is the order's exposure reserved.
func (r *Risk) exposureLimited(o *contract.OrderIntent) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, limits, _ := r.applicable(&contract.RiskMetrics{BotID: o.BotID, StrategyID: o.StrategyID})
	for _, ls := range limits {
		for _, l := range ls {
			if l.Type == contract.LimitPositionSize || l.Type == contract.LimitCustom {
				return true
			}
		}
	}
	return false
}

// checkWith returns the first limit the order breaches with the held reservations
// counted, and whether it is refused for want of a price.
func (r *Risk) checkWith(o *contract.OrderIntent, held []contract.Reservation) (*Breach, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	current := &contract.RiskMetrics{BotID: o.BotID, StrategyID: o.StrategyID}
	if entry, ok := r.metrics[o.BotID]; ok {
		current = entry.m
	}
	after := withOrder(withReservations(current, held), o)
	after.StrategyID = o.StrategyID
	day := r.cfg.Day.Of(r.now())
	scopes, limits, _ := r.applicable(after)
	for i, scope := range scopes {
		for j := range limits[i] {
			if b := limits[i][j].unpriced(scope, o); b != nil {
				return b, true
			}
			if b := limits[i][j].check(scope, after, day); b != nil {
				return b, false
			}
		}
	}
	return nil, false
}

// UpdateMetrics applies an update to a bot's metrics with compare-and-set, retrying
// on concurrent writers, and returns the new metrics; an update already applied (by
// its id) is skipped and the current metrics returned.
func (r *Risk) UpdateMetrics(ctx context.Context, botID string, u contract.RiskUpdate) (*contract.RiskMetrics, error) {
	return UpdateMetrics(ctx, r.kv, botID, u, r.cfg.Day, r.now())
}

// UpdateMetrics applies an update to a bot's metrics in the flow_risk bucket with
// compare-and-set, retrying on concurrent writers. An update whose id is among the
// last ones applied is skipped: the current metrics are returned.
func UpdateMetrics(ctx context.Context, kv jetstream.KeyValue, botID string, u contract.RiskUpdate, day TradingDay, now time.Time) (*contract.RiskMetrics, error) {
	key := contract.RiskMetricsKey(botID)
	for range 20 {
		current := &contract.RiskMetrics{BotID: botID}
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", key, err)
		default:
			if err := json.Unmarshal(e.Value(), current); err != nil {
				return nil, fmt.Errorf("decode %s: %w", key, err)
			}
			rev = e.Revision()
		}
		next, applied := ApplyUpdate(current, u, day.Of(now), now)
		next.BotID = botID
		if !applied {
			return next, nil
		}
		data, err := json.Marshal(next)
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, data)
		} else {
			_, err = kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, fmt.Errorf("write %s: %w", key, err)
		}
	}
	return nil, fmt.Errorf("write %s: too many concurrent writers, try again", key)
}
