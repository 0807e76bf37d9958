package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/risk"
)

type openGate struct{}

func (openGate) CanTrade(emergency.Scopes, bool) error { return nil }

type refusing struct{ err error }

func (r refusing) CheckOrder(context.Context, *contract.OrderIntent) error { return r.err }
func (refusing) Release(context.Context, string, string) error             { return nil }

// Risk limits not loaded yet are a transient refusal (the order node retries); a
// breached limit is permanent.
func TestDeskClassifiesRiskRefusals(t *testing.T) {
	for _, tc := range []struct {
		err       error
		kind      string
		transient bool
	}{
		{risk.ErrRiskUnknown, KindRiskUnknown, true},
		{&risk.RiskError{Breach: &risk.Breach{Scope: "global", BotID: "b1", Limit: contract.RiskLimit{ID: "loss", Type: contract.LimitDailyLoss}}}, KindRiskLimit, false},
	} {
		err := desk{ctrl: openGate{}, risk: refusing{tc.err}}.CheckOrder(context.Background(), &contract.OrderIntent{BotID: "b1"})
		if !errors.Is(err, tc.err) || nodes.KindOf(err) != tc.kind || nodes.IsTransient(err) != tc.transient {
			t.Errorf("%v: kind %s, transient %v; want %s, %v", err, nodes.KindOf(err), nodes.IsTransient(err), tc.kind, tc.transient)
		}
	}
}

type staleGate struct{}

func (staleGate) CanTrade(emergency.Scopes, bool) error { return emergency.ErrStale }

// An emergency state unconfirmed at the order's check is a transient refusal, as
// risk limits not loaded are: the order node retries, nothing is placed meanwhile.
func TestDeskRetriesAnUnconfirmedEmergencyState(t *testing.T) {
	d := desk{ctrl: staleGate{}, risk: refusing{}}
	err := d.CheckOrder(context.Background(), &contract.OrderIntent{ClientOrderID: "x.buy", BotID: "b1", Symbol: "BTCUSDT", Side: contract.SideBuy, Quantity: 1})
	if !errors.Is(err, emergency.ErrStale) || !nodes.IsTransient(err) || nodes.KindOf(err) != KindEmergencyUnknown {
		t.Fatalf("CheckOrder = %v, want a transient %s", err, KindEmergencyUnknown)
	}
}
