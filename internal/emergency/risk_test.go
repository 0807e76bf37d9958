package emergency

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
)

// newTestRisk is a Risk with configured limits and no NATS: enough for CheckOrder
// while no limit halts (it would need the controller).
func newTestRisk(t *testing.T, limits map[string][]contract.RiskLimit) *Risk {
	t.Helper()
	r, err := NewRisk(nil, nil, nil, RiskConfig{Limits: limits}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A market order without a price cannot be valued against a notional limit: it is
// refused, and not counted as a breach (no halt, even with auto_halt).
func TestOrderWithoutPriceIsRefusedUnderANotionalLimit(t *testing.T) {
	r := newTestRisk(t, map[string][]contract.RiskLimit{
		"bot.b1": {{ID: "btc-notional", Type: contract.LimitPositionSize, Basis: "notional", Symbol: "BTCUSDT", Threshold: 100000, AutoHalt: true}},
	})
	order := func(bot, symbol string, price float64, reduceOnly bool) *contract.OrderIntent {
		return &contract.OrderIntent{BotID: bot, Symbol: symbol, Side: contract.SideBuy, Quantity: 1, Type: contract.OrderTypeMarket, ReferencePrice: price, ReduceOnly: reduceOnly}
	}
	err := r.CheckOrder(context.Background(), order("b1", "BTCUSDT", 0, false))
	var re *RiskError
	if !errors.As(err, &re) || re.Halted || !strings.Contains(err.Error(), "btc-notional") ||
		!strings.Contains(err.Error(), "cannot be valued") || !strings.Contains(err.Error(), "reference_price") {
		t.Fatalf("unpriced order: %v, want a RiskError saying it cannot be valued", err)
	}
	for _, o := range []*contract.OrderIntent{
		order("b1", "BTCUSDT", 65000, false), // priced, within the limit
		order("b1", "ETHUSDT", 0, false),     // another symbol
		order("b2", "BTCUSDT", 0, false),     // another bot
		order("b1", "BTCUSDT", 0, true),      // reduce-only
	} {
		if err := r.CheckOrder(context.Background(), o); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
