package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/publish"
)

// Error kinds of refused orders.
const (
	KindTradingPaused    = "trading_paused"
	KindRiskLimit        = "risk_limit"
	KindEmergencyUnknown = "emergency_state_unknown"
)

// scopesOf returns the emergency scopes covering an execution.
func scopesOf(x *executor.Execution) emergency.Scopes {
	return emergency.Scopes{BotID: x.BotID, StrategyID: x.StrategyID, WorkflowID: x.WorkflowID}
}

// ErrLostOwnership stops an execution whose status was claimed by another worker
// since this one claimed it: the server gave its request to that worker.
var ErrLostOwnership = errors.New("another worker took over this execution")

// guard is asked before each node. Any node stops at a halt. A provider node (one
// with side effects outside) also fails while the emergency state is unconfirmed
// or once the request's not_after has passed, and the execution stops when another
// worker has taken it over, so that no side effect happens twice or late.
type guard struct {
	ctrl  *emergency.Controller
	store *kvstate.Store
}

func (g guard) CanOperate(ctx context.Context, x *executor.Execution, sideEffects bool) error {
	err := g.ctrl.CanOperate(scopesOf(x))
	switch {
	case errors.Is(err, emergency.ErrStale):
		if sideEffects {
			return nodes.Permanent(KindEmergencyUnknown, fmt.Errorf("%w; this node calls an outside service and was not started", err))
		}
		return nil
	case err != nil || !sideEffects:
		return err
	}
	if x.NotAfter != nil && time.Now().After(*x.NotAfter) {
		return nodes.Permanent(contract.KindStale, fmt.Errorf("request expired at %s (not_after): its outside calls are not made late; publish a fresh request",
			x.NotAfter.UTC().Format(time.RFC3339)))
	}
	_, rev, err := g.store.Status(ctx, x.WorkflowID, x.ID)
	if err != nil {
		return fmt.Errorf("confirm ownership before a side effect: %w", err)
	}
	if rev != x.Claim {
		return ErrLostOwnership
	}
	return nil
}

func (g guard) Watch(x *executor.Execution, cancel context.CancelCauseFunc) func() {
	return g.ctrl.Watch(scopesOf(x), cancel)
}

// desk checks orders against the emergency state and the risk limits, and places them.
type desk struct {
	ctrl *emergency.Controller
	risk *emergency.Risk
	pub  *publish.Publisher
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
		return nodes.Permanent(KindEmergencyUnknown, err)
	case err != nil:
		return err
	}
	if err := d.risk.CheckOrder(ctx, o); err != nil {
		return nodes.Permanent(KindRiskLimit, err)
	}
	return nil
}

func (d desk) PlaceOrder(ctx context.Context, o *contract.OrderIntent) (uint64, bool, error) {
	return d.pub.Order(ctx, o)
}
