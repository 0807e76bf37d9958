package risk

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

func TestTradingDayResetsAtItsTimeAndZone(t *testing.T) {
	day, err := ParseTradingDay("17:00", "America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	ny, _ := time.LoadLocation("America/New_York")
	if got := day.Of(time.Date(2026, 11, 27, 16, 59, 0, 0, ny)); got != "2026-11-26" {
		t.Errorf("before the reset: %s", got)
	}
	if got := day.Of(time.Date(2026, 11, 27, 17, 0, 0, 0, ny)); got != "2026-11-27" {
		t.Errorf("at the reset: %s", got)
	}
	if _, err := ParseTradingDay("25:00", "UTC"); err == nil {
		t.Error("a bad reset time was accepted")
	}
	if _, err := ParseTradingDay("00:00", "Mars/Olympus"); err == nil {
		t.Error("a bad zone was accepted")
	}
}

func TestLimitsBreachWhenTheValueExceedsTheThreshold(t *testing.T) {
	limits, err := CompileLimits([]contract.RiskLimit{
		{ID: "loss", Type: contract.LimitDailyLoss, Threshold: 1000},
		{ID: "btc", Type: contract.LimitPositionSize, Symbol: "BTC", Threshold: 2},
		{ID: "notional", Type: contract.LimitPositionSize, Basis: "notional", Threshold: 100000},
		{ID: "dd", Type: contract.LimitDrawdown, Threshold: 10},
		{ID: "orders", Type: contract.LimitCustom, Expression: "custom.open_orders > 50 || daily_pnl < -5000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	base := contract.RiskMetrics{BotID: "b1", TradingDay: "2026-11-28", Custom: map[string]float64{"open_orders": 0}}
	cases := []struct {
		name   string
		m      func(m *contract.RiskMetrics)
		breach string
		value  float64
	}{
		{"quiet", func(*contract.RiskMetrics) {}, "", 0},
		{"loss at the threshold", func(m *contract.RiskMetrics) { m.DailyPnL = -1000 }, "", 0},
		{"loss over", func(m *contract.RiskMetrics) { m.DailyPnL = -1250 }, "loss", 1250},
		{"yesterday's loss", func(m *contract.RiskMetrics) { m.DailyPnL = -9999; m.TradingDay = "2026-11-27" }, "", 0},
		{"short position", func(m *contract.RiskMetrics) { m.Positions = map[string]contract.Position{"BTC": {Quantity: -3}} }, "btc", 3},
		{"other symbol", func(m *contract.RiskMetrics) { m.Positions = map[string]contract.Position{"ETH": {Quantity: 30}} }, "", 0},
		{"notional", func(m *contract.RiskMetrics) {
			m.Positions = map[string]contract.Position{"ETH": {Quantity: 30, Notional: 120000}}
		}, "notional", 120000},
		{"drawdown", func(m *contract.RiskMetrics) { m.Equity, m.PeakEquity = 85, 100 }, "dd", 15},
		{"custom", func(m *contract.RiskMetrics) { m.Custom = map[string]float64{"open_orders": 51} }, "orders", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			tc.m(&m)
			var got *Breach
			for i := range limits {
				if got = limits[i].check("bot.b1", &m, "2026-11-28"); got != nil {
					break
				}
			}
			switch {
			case tc.breach == "" && got != nil:
				t.Fatalf("breach %s: %s", got.Limit.ID, got.Reason())
			case tc.breach != "" && (got == nil || got.Limit.ID != tc.breach || got.Value != tc.value):
				t.Fatalf("breach = %+v, want %s with value %v", got, tc.breach, tc.value)
			}
		})
	}
}

// A custom limit whose expression fails (a metric never reported) fails closed.
func TestCustomLimitThatCannotBeEvaluatedIsBreached(t *testing.T) {
	limits, err := CompileLimits([]contract.RiskLimit{{ID: "var", Type: contract.LimitCustom, Expression: "custom.var_95 > 5000"}})
	if err != nil {
		t.Fatal(err)
	}
	m := &contract.RiskMetrics{BotID: "b1", Custom: map[string]float64{"open_orders": 3}}
	b := limits[0].check("global", m, "2026-11-28")
	if b == nil {
		t.Fatal("no breach: a limit that cannot be evaluated must count as breached")
	}
	for _, want := range []string{"var", "custom.var_95 > 5000", "cannot be checked", "b1", "<nil> > int", "counted as breached"} {
		if !strings.Contains(b.Reason(), want) {
			t.Errorf("reason %q lacks %q", b.Reason(), want)
		}
	}
	if strings.Contains(b.Reason(), "\n") {
		t.Errorf("reason spans lines: %q", b.Reason())
	}
	m.Custom["var_95"] = 4000
	if b := limits[0].check("global", m, "2026-11-28"); b != nil {
		t.Errorf("breach once the metric is reported below the threshold: %s", b.Reason())
	}
}

// Custom expressions use the field names of the metrics schema.
func TestCustomLimitsReadPositionsByTheirSchemaNames(t *testing.T) {
	limits, err := CompileLimits([]contract.RiskLimit{{ID: "btc", Type: contract.LimitCustom,
		Expression: "positions.BTCUSDT.quantity > 1 || positions.BTCUSDT.notional > 100000"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p      contract.Position
		breach bool
	}{{contract.Position{Quantity: 0.5, Notional: 32500}, false}, {contract.Position{Quantity: 2}, true}, {contract.Position{Quantity: 1, Notional: 150000}, true}} {
		m := &contract.RiskMetrics{BotID: "b1", Positions: map[string]contract.Position{"BTCUSDT": tc.p}}
		if b := limits[0].check("global", m, "2026-11-28"); (b != nil) != tc.breach {
			t.Errorf("position %+v: breach %+v, want %v", tc.p, b, tc.breach)
		}
	}
}

func TestBreachReasonNamesLimitThresholdAndValue(t *testing.T) {
	b := &Breach{Scope: "bot.b1", BotID: "b1", Value: 1250, Limit: contract.RiskLimit{ID: "max-loss", Type: contract.LimitDailyLoss, Threshold: 1000}}
	for _, want := range []string{"max-loss", "daily_loss", "1250", "1000", "bot.b1"} {
		if !strings.Contains(b.Reason(), want) {
			t.Errorf("reason %q lacks %q", b.Reason(), want)
		}
	}
}

func TestCompileLimitsRejectsBadLimits(t *testing.T) {
	for _, l := range []contract.RiskLimit{
		{ID: "x", Type: "max_fun", Threshold: 1},
		{ID: "x", Type: contract.LimitDailyLoss},
		{ID: "x", Type: contract.LimitPositionSize, Threshold: 1, Basis: "lots"},
		{ID: "x", Type: contract.LimitCustom, Expression: "daily_pnl +"},
		{ID: "bad id", Type: contract.LimitDailyLoss, Threshold: 1},
	} {
		if _, err := CompileLimits([]contract.RiskLimit{l}); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}

func TestApplyUpdateResetsTheDayAndTracksThePeak(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	pnl, eq := -100.0, 900.0
	m := &contract.RiskMetrics{BotID: "b1", TradingDay: "2026-11-27", DailyPnL: -5000, PeakEquity: 1000, Positions: map[string]contract.Position{"BTC": {Quantity: 1}}}
	next, _ := ApplyUpdate(m, contract.RiskUpdate{PnL: &pnl, Equity: &eq, Positions: map[string]contract.Position{"ETH": {Quantity: 2}}}, "2026-11-28", now)
	if next.TradingDay != "2026-11-28" || next.DailyPnL != -100 || next.PeakEquity != 1000 || next.Equity != 900 {
		t.Errorf("next = %+v", next)
	}
	if len(next.Positions) != 2 || len(m.Positions) != 1 {
		t.Errorf("positions: next %v, the original changed to %v", next.Positions, m.Positions)
	}
}

func TestApplyUpdateSkipsAnUpdateAlreadyApplied(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	pnl := -100.0
	m := &contract.RiskMetrics{BotID: "b1"}
	for i := range appliedUpdatesKept + 1 {
		var applied bool
		if m, applied = ApplyUpdate(m, contract.RiskUpdate{ID: fmt.Sprintf("x%d.n", i), PnL: &pnl}, "2026-11-28", now); !applied {
			t.Fatalf("update %d skipped", i)
		}
	}
	if len(m.AppliedUpdates) != appliedUpdatesKept || m.AppliedUpdates[0] != "x1.n" {
		t.Fatalf("%d ids kept from %s, want the last %d", len(m.AppliedUpdates), m.AppliedUpdates[0], appliedUpdatesKept)
	}
	replayed, applied := ApplyUpdate(m, contract.RiskUpdate{ID: "x5.n", PnL: &pnl}, "2026-11-28", now)
	if applied || replayed.DailyPnL != m.DailyPnL {
		t.Errorf("a replayed update was applied: daily PnL %v, before %v", replayed.DailyPnL, m.DailyPnL)
	}
	// Without an id, an update is never skipped; and the input is not changed.
	before := len(m.AppliedUpdates)
	next, applied := ApplyUpdate(m, contract.RiskUpdate{PnL: &pnl}, "2026-11-28", now)
	if !applied || next.DailyPnL != m.DailyPnL-100 || len(m.AppliedUpdates) != before {
		t.Errorf("update without id: applied %v, daily PnL %v", applied, next.DailyPnL)
	}
}
