package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/publish"
	"github.com/flowguard/flowguard/internal/risk"
)

// Error kinds of refused orders.
const (
	KindTradingPaused    = "trading_paused"
	KindRiskLimit        = "risk_limit"
	KindEmergencyUnknown = "emergency_state_unknown"
	KindOrderUnknown     = "order_state_unknown"
	// KindRiskUnknown: the risk limits are not loaded yet, or the order's exposure
	// could not be reserved; the order is retried.
	KindRiskUnknown = "risk_state_unknown"
)

// scopesOf returns the emergency scopes covering an execution.
func scopesOf(x *executor.Execution) emergency.Scopes {
	return emergency.Scopes{BotID: x.BotID, StrategyID: x.StrategyID, WorkflowID: x.WorkflowID}
}

// guard is asked before each node. Any node stops at a halt. A provider node (one
// with side effects outside) waits while the emergency state is unconfirmed and
// fails once the request's not_after has passed: no side effect happens
// unconfirmed or late. (Before it starts, the executor confirms through the
// execution's owner that the execution was not taken over: nor twice.)
type guard struct {
	ctrl *emergency.Controller
}

func (g guard) CanOperate(ctx context.Context, x *executor.Execution, sideEffects bool) error {
	changed := g.ctrl.Changed()
	err := g.ctrl.CanOperate(scopesOf(x))
	if !sideEffects {
		if errors.Is(err, emergency.ErrStale) {
			return nil // computing is harmless; side effects wait below
		}
		return err
	}
	for logged := false; errors.Is(err, emergency.ErrStale); err = g.ctrl.CanOperate(scopesOf(x)) {
		if !logged {
			zerolog.Ctx(ctx).Warn().Msg("emergency state unconfirmed; the next node calls an outside service and waits until it is confirmed")
			logged = true
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-changed:
		}
		changed = g.ctrl.Changed()
	}
	if err != nil {
		return err
	}
	if x.NotAfter != nil && time.Now().After(*x.NotAfter) {
		return nodes.Permanent(contract.KindStale, fmt.Errorf("request expired at %s (not_after): its outside calls are not made late; publish a fresh request",
			x.NotAfter.UTC().Format(time.RFC3339)))
	}
	return nil
}

func (g guard) Watch(x *executor.Execution, cancel context.CancelCauseFunc) func() {
	return g.ctrl.Watch(scopesOf(x), cancel)
}

// desk checks orders against the emergency state and the risk limits, and places them.
type desk struct {
	ctrl            tradeGate
	risk            orderChecker
	pub             *publish.Publisher
	duplicateWindow time.Duration
}

// tradeGate says whether the emergency state lets an order through (emergency.Controller).
type tradeGate interface {
	CanTrade(s emergency.Scopes, reduceOnly bool) error
}

// orderChecker checks an order against the risk limits and reserves its exposure,
// and releases the reservation of an order that was not placed (risk.Risk).
type orderChecker interface {
	CheckOrder(ctx context.Context, o *contract.OrderIntent) error
	Release(ctx context.Context, botID, clientOrderID string) error
}

// ReleaseOrder releases the exposure an order reserved, once it is known that it
// was not placed.
func (d desk) ReleaseOrder(ctx context.Context, o *contract.OrderIntent) error {
	return d.risk.Release(ctx, o.BotID, o.ClientOrderID)
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
		// It may have been confirmed when the node started and be unconfirmed
		// for a moment now (a server restarting): the node retries.
		return nodes.Transient(KindEmergencyUnknown, err)
	case err != nil:
		return err
	}
	err = d.risk.CheckOrder(ctx, o)
	switch {
	case errors.Is(err, risk.ErrRiskUnknown), errors.Is(err, risk.ErrReserve):
		return nodes.Transient(KindRiskUnknown, err)
	case err != nil:
		return nodes.Permanent(KindRiskLimit, err)
	}
	return nil
}

// PlaceOrder publishes an intent once for as long as the execution's state is kept,
// not only within the stream's duplicate window: a mark in KV, fenced by the
// execution's claim, is written before the publish and completed with its stream
// sequence after. The order node reads the mark first and reports an order
// already placed without coming here; a mark left "publishing" by a worker that
// died is published again within the duplicate window (the stream drops a copy),
// and past it refused, since whether the intent was stored cannot be known.
func (d desk) PlaceOrder(ctx context.Context, marks nodes.OrderMarks, mark *contract.OrderMark, o *contract.OrderIntent) (uint64, bool, error) {
	switch {
	case mark == nil:
		mark = &contract.OrderMark{ClientOrderID: o.ClientOrderID, State: contract.OrderPublishing, At: time.Now().UTC(), Intent: o}
		if err := marks.PutOrderMark(ctx, o.NodeID, mark); err != nil {
			return 0, false, err
		}
	case time.Since(mark.At) > d.duplicateWindow:
		return 0, false, nodes.Permanent(KindOrderUnknown, fmt.Errorf(
			"order %s may or may not have been placed: a worker stopped while placing it at %s, longer ago than the duplicate window (%s); "+
				"look for client_order_id %s in %s and at the exchange, and act on it by hand",
			o.ClientOrderID, mark.At.Format(time.RFC3339), d.duplicateWindow, o.ClientOrderID, contract.StreamOrders))
	}
	seq, dup, err := d.pub.Order(ctx, o)
	if err != nil {
		return 0, false, err
	}
	mark.State, mark.StreamSeq, mark.Intent = contract.OrderPlaced, seq, o
	if err := marks.PutOrderMark(ctx, o.NodeID, mark); err != nil {
		return 0, false, err
	}
	return seq, dup, nil
}
