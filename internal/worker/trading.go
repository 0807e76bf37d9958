package worker

import (
	"context"
	"errors"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/publish"
)

// Error kinds of refused orders.
const (
	KindTradingPaused    = "trading_paused"
	KindRiskLimit        = "risk_limit"
	KindEmergencyUnknown = "emergency_state_unknown"
	// KindRiskUnknown: the risk limits are not loaded yet; the order is retried.
	KindRiskUnknown = "risk_state_unknown"
)

// scopesOf returns the emergency scopes covering an execution.
func scopesOf(x *executor.Execution) emergency.Scopes {
	return emergency.Scopes{BotID: x.BotID, StrategyID: x.StrategyID, WorkflowID: x.WorkflowID}
}

// guard lets the executor check and watch the emergency state between nodes. An
// unconfirmed state does not stop a running execution (its orders are refused).
type guard struct{ ctrl *emergency.Controller }

func (g guard) CanOperate(x *executor.Execution) error {
	if err := g.ctrl.CanOperate(scopesOf(x)); !errors.Is(err, emergency.ErrStale) {
		return err
	}
	return nil
}

func (g guard) Watch(x *executor.Execution, cancel context.CancelCauseFunc) func() {
	return g.ctrl.Watch(scopesOf(x), cancel)
}

// desk checks orders against the emergency state and the risk limits, and places them.
type desk struct {
	ctrl tradeGate
	risk orderChecker
	pub  *publish.Publisher
}

// tradeGate says whether the emergency state lets an order through (emergency.Controller).
type tradeGate interface {
	CanTrade(s emergency.Scopes, reduceOnly bool) error
}

// orderChecker checks an order against the risk limits (emergency.Risk).
type orderChecker interface {
	CheckOrder(ctx context.Context, o *contract.OrderIntent) error
}

func (d desk) CheckOrder(ctx context.Context, o *contract.OrderIntent) error {
	bot := o.BotID
	if bot == contract.NoBot {
		bot = ""
	}
	err := d.ctrl.CanTrade(emergency.Scopes{BotID: bot, StrategyID: o.StrategyID, WorkflowID: o.WorkflowID}, o.ReduceOnly)
	var halt *contract.HaltError
	switch {
	case errors.As(err, &halt):
		return nodes.Permanent(contract.KindHalted, err)
	case errors.Is(err, emergency.ErrPaused):
		return nodes.Permanent(KindTradingPaused, err)
	case errors.Is(err, emergency.ErrStale):
		return nodes.Transient(KindEmergencyUnknown, err)
	case err != nil:
		return err
	}
	err = d.risk.CheckOrder(ctx, o)
	switch {
	case errors.Is(err, emergency.ErrRiskUnknown):
		return nodes.Transient(KindRiskUnknown, err)
	case err != nil:
		return nodes.Permanent(KindRiskLimit, err)
	}
	return nil
}

func (d desk) PlaceOrder(ctx context.Context, o *contract.OrderIntent) (uint64, bool, error) {
	return d.pub.Order(ctx, o)
}
