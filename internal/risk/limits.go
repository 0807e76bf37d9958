package risk

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/schemas"
)

// ErrRiskLimit is matched by the error of an order refused by a risk limit.
var ErrRiskLimit = errors.New("risk limit breached")

// Breach is a risk limit exceeded by a bot's metrics, or one that cannot be
// checked: limits fail closed.
type Breach struct {
	Scope string
	Limit contract.RiskLimit
	BotID string
	Value float64
	// Detail names what was measured, such as the symbol of a position.
	Detail string
	// Err, when set, says why the limit could not be checked (an expression that
	// fails); it counts as breached.
	Err error
}

// Reason says which limit, for which bot, the value and the threshold, or why the
// limit could not be checked.
func (b *Breach) Reason() string {
	what := b.Limit.Type
	if b.Detail != "" {
		what += " " + b.Detail
	}
	if b.Limit.Type == contract.LimitCustom {
		what = "custom: " + b.Limit.Expression
	}
	switch {
	case b.Err != nil:
		return fmt.Sprintf("risk limit %s (%s) of %s cannot be checked for bot %s: %v", b.Limit.ID, what, b.Scope, b.BotID, b.Err)
	case b.Limit.Type == contract.LimitCustom:
		return fmt.Sprintf("risk limit %s (%s) of %s breached by bot %s", b.Limit.ID, what, b.Scope, b.BotID)
	}
	return fmt.Sprintf("risk limit %s (%s) of %s breached by bot %s: value %s exceeds threshold %s",
		b.Limit.ID, what, b.Scope, b.BotID, num(b.Value), num(b.Limit.Threshold))
}

// RiskError is an order refused by a risk limit. It matches ErrRiskLimit.
type RiskError struct {
	Breach *Breach
	// Halted reports that the limit's auto_halt published a halt.
	Halted bool
}

func (e *RiskError) Error() string {
	if e.Halted {
		return e.Breach.Reason() + "; order refused and " + e.Breach.Scope + " halted"
	}
	return e.Breach.Reason() + "; order refused"
}

// Is makes a RiskError match ErrRiskLimit.
func (e *RiskError) Is(target error) bool { return target == ErrRiskLimit }

func num(v float64) string { return fmt.Sprintf("%.10g", v) }

// TradingDay says when a trading day starts: Reset after midnight in Zone.
type TradingDay struct {
	Reset time.Duration
	Zone  *time.Location
}

// Of returns the trading day (YYYY-MM-DD) that t belongs to.
func (d TradingDay) Of(t time.Time) string {
	zone := d.Zone
	if zone == nil {
		zone = time.UTC
	}
	return t.In(zone).Add(-d.Reset).Format(time.DateOnly)
}

// ParseTradingDay reads a reset time "HH:MM" and an IANA zone name.
func ParseTradingDay(reset, zone string) (TradingDay, error) {
	t, err := time.Parse("15:04", reset)
	if err != nil {
		return TradingDay{}, fmt.Errorf("trading day reset %q must be HH:MM, such as 00:00 or 17:00", reset)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return TradingDay{}, fmt.Errorf("trading day zone %q: %w; use an IANA name such as UTC or America/New_York", zone, err)
	}
	return TradingDay{Reset: time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, Zone: loc}, nil
}

// compiledLimit is a limit ready to evaluate.
type compiledLimit struct {
	contract.RiskLimit
	program *vm.Program
}

// metricsEnv is what custom limit expressions see. A custom metric the bot never
// reported is null (not 0), so that comparing it fails and the limit fails closed.
type metricsEnv struct {
	DailyPnL    float64                      `expr:"daily_pnl"`
	Equity      float64                      `expr:"equity"`
	PeakEquity  float64                      `expr:"peak_equity"`
	DrawdownPct float64                      `expr:"drawdown_pct"`
	Positions   map[string]contract.Position `expr:"positions"`
	Custom      map[string]any               `expr:"custom"`
}

// CompileLimits checks limits and prepares them; errors name the limit.
func CompileLimits(limits []contract.RiskLimit) ([]compiledLimit, error) {
	out := make([]compiledLimit, 0, len(limits))
	seen := map[string]bool{}
	for _, l := range limits {
		if err := contract.CheckID("limit id", l.ID); err != nil {
			return nil, err
		}
		if seen[l.ID] {
			return nil, fmt.Errorf("limit %s: duplicate id", l.ID)
		}
		seen[l.ID] = true
		cl := compiledLimit{RiskLimit: l}
		switch l.Type {
		case contract.LimitDailyLoss, contract.LimitDrawdown:
			if l.Threshold <= 0 {
				return nil, fmt.Errorf("limit %s: threshold must be positive", l.ID)
			}
		case contract.LimitPositionSize:
			if l.Threshold <= 0 {
				return nil, fmt.Errorf("limit %s: threshold must be positive", l.ID)
			}
			if l.Basis != "" && l.Basis != "quantity" && l.Basis != "notional" {
				return nil, fmt.Errorf("limit %s: basis must be quantity or notional, got %q", l.ID, l.Basis)
			}
		case contract.LimitCustom:
			p, err := expr.Compile(l.Expression, expr.Env(metricsEnv{}), expr.AsBool())
			if err != nil {
				return nil, fmt.Errorf("limit %s: expression %q: %v", l.ID, l.Expression, err)
			}
			cl.program = p
		default:
			return nil, fmt.Errorf("limit %s: unknown type %q; use daily_loss, position_size, drawdown_pct or custom", l.ID, l.Type)
		}
		out = append(out, cl)
	}
	return out, nil
}

// CheckLimitScope validates the scope of risk limits: global, bot.<id> or
// strategy.<id>. Metrics are kept per bot, with its strategy, so the limits of a
// workflow.<id> scope could never be checked.
func CheckLimitScope(scope string) error {
	kind, _, _ := strings.Cut(scope, ".")
	if emergency.CheckScope(scope) != nil || kind == emergency.ScopeWorkflow {
		return fmt.Errorf("%w %q for risk limits: use global, bot.<id> or strategy.<id> (metrics are kept per bot and its strategy, so limits of a workflow.<id> scope would never be checked)", emergency.ErrInvalidScope, scope)
	}
	return nil
}

// ParseLimitsByScope reads risk limits by scope, the shape of the worker's
// --risk-limits file: {"global": [limit, ...], "bot.b1": [...]}. Each scope and
// its list are checked (against the risk-limits schema, so that a misspelt field
// is an error) and compiled; errors name the scope.
func ParseLimitsByScope(data []byte) (map[string][]contract.RiskLimit, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := make(map[string][]contract.RiskLimit, len(raw))
	for _, scope := range slices.Sorted(maps.Keys(raw)) {
		if err := CheckLimitScope(scope); err != nil {
			return nil, err
		}
		doc, err := json.Marshal(map[string]json.RawMessage{"limits": raw[scope]})
		if err == nil {
			_, err = ParseLimits(doc)
		}
		if err != nil {
			return nil, fmt.Errorf("scope %s: %w", scope, err)
		}
		var limits []contract.RiskLimit
		if err := json.Unmarshal(raw[scope], &limits); err != nil {
			return nil, fmt.Errorf("scope %s: %w", scope, err)
		}
		out[scope] = limits
	}
	return out, nil
}

// ParseLimits checks a limits document against its schema and compiles it.
func ParseLimits(data []byte) ([]compiledLimit, error) {
	if err := schemas.ValidateJSON(schemas.RiskLimits, data); err != nil {
		return nil, fmt.Errorf("risk limits %w", err)
	}
	var doc contract.RiskLimits
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return CompileLimits(doc.Limits)
}

// check returns the breach of l by m on trading day day, or nil.
func (l *compiledLimit) check(scope string, m *contract.RiskMetrics, day string) *Breach {
	breach := func(value float64, detail string) *Breach {
		return &Breach{Scope: scope, Limit: l.RiskLimit, BotID: m.BotID, Value: value, Detail: detail}
	}
	switch l.Type {
	case contract.LimitDailyLoss:
		if loss := -dailyPnL(m, day); loss > l.Threshold {
			return breach(loss, "")
		}
	case contract.LimitDrawdown:
		if dd := drawdownPct(m); dd > l.Threshold {
			return breach(dd, "")
		}
	case contract.LimitPositionSize:
		for sym, p := range m.Positions {
			if l.Symbol != "" && sym != l.Symbol {
				continue
			}
			v := math.Abs(p.Quantity)
			if l.Basis == "notional" {
				v = math.Abs(p.Notional)
			}
			if v > l.Threshold {
				return breach(v, sym)
			}
		}
	case contract.LimitCustom:
		env := metricsEnv{DailyPnL: dailyPnL(m, day), Equity: m.Equity, PeakEquity: m.PeakEquity,
			DrawdownPct: drawdownPct(m), Positions: m.Positions, Custom: make(map[string]any, len(m.Custom))}
		for k, v := range m.Custom {
			env.Custom[k] = v
		}
		v, err := expr.Run(l.program, env)
		if err != nil {
			b := breach(1, "")
			msg, _, _ := strings.Cut(err.Error(), "\n") // the rest points at the expression
			b.Err = fmt.Errorf("%s; counted as breached (limits fail closed): report every metric it uses (one never reported is null), or give it a default, as in (custom.x ?? 0) > 10", msg)
			return b
		}
		if v == true {
			return breach(1, "")
		}
	}
	return nil
}

// unpriced returns the refusal of an order that l cannot check: l is a notional
// position limit covering the order's symbol and the order has no price. It is
// not a breach (nothing to halt), but the order must not go unchecked.
func (l *compiledLimit) unpriced(scope string, o *contract.OrderIntent) *Breach {
	if l.Type != contract.LimitPositionSize || l.Basis != "notional" || l.Symbol != "" && l.Symbol != o.Symbol || o.Price() != 0 {
		return nil
	}
	return &Breach{Scope: scope, Limit: l.RiskLimit, BotID: o.BotID, Detail: o.Symbol,
		Err: errors.New("the order has no price, so its notional cannot be valued: set the order node's reference_price (the expected fill price of a market order) or limit_price")}
}

func dailyPnL(m *contract.RiskMetrics, day string) float64 {
	if m.TradingDay != day {
		return 0 // the day has reset since
	}
	return m.DailyPnL
}

func drawdownPct(m *contract.RiskMetrics) float64 {
	if m.PeakEquity <= 0 || m.Equity >= m.PeakEquity {
		return 0
	}
	return (m.PeakEquity - m.Equity) / m.PeakEquity * 100
}

// appliedUpdatesKept bounds the ids of applied updates kept in a bot's metrics: an
// update is deduplicated while it is among the last ones applied.
const appliedUpdatesKept = 256

// ApplyUpdate returns m changed by u at time now on trading day day, and true; or
// m unchanged and false when u's id is among the updates already applied.
func ApplyUpdate(m *contract.RiskMetrics, u contract.RiskUpdate, day string, now time.Time) (*contract.RiskMetrics, bool) {
	if u.ID != "" && slices.Contains(m.AppliedUpdates, u.ID) {
		return m, false
	}
	next := *m
	if next.TradingDay != day {
		next.TradingDay, next.DailyPnL = day, 0
	}
	if u.StrategyID != "" {
		next.StrategyID = u.StrategyID
	}
	if u.PnL != nil {
		next.DailyPnL += *u.PnL
	}
	if u.Equity != nil {
		next.Equity = *u.Equity
		next.PeakEquity = max(next.PeakEquity, next.Equity)
	}
	if len(u.Positions) > 0 {
		next.Positions = make(map[string]contract.Position, len(m.Positions)+len(u.Positions))
		maps.Copy(next.Positions, m.Positions)
		maps.Copy(next.Positions, u.Positions)
	}
	if len(u.Custom) > 0 {
		next.Custom = make(map[string]float64, len(m.Custom)+len(u.Custom))
		maps.Copy(next.Custom, m.Custom)
		maps.Copy(next.Custom, u.Custom)
	}
	if u.ID != "" {
		ids := append(slices.Clip(m.AppliedUpdates), u.ID)
		next.AppliedUpdates = ids[max(len(ids)-appliedUpdatesKept, 0):]
	}
	next.UpdatedAt = now.UTC()
	return &next, true
}

// withOrder returns m as it would be once o is filled.
func withOrder(m *contract.RiskMetrics, o *contract.OrderIntent) *contract.RiskMetrics {
	next := *m
	positions := maps.Clone(m.Positions)
	if positions == nil {
		positions = map[string]contract.Position{}
	}
	delta := o.Quantity
	if o.Side == contract.SideSell {
		delta = -delta
	}
	p := positions[o.Symbol]
	p.Quantity += delta
	p.Notional += delta * o.Price()
	positions[o.Symbol] = p
	next.Positions = positions
	return &next
}
