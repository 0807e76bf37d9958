package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/workflow"
)

// SideEffectOrder is the side_effect of an http node that places an order: it is
// then gated as an order node is (halt, pause unless reduce-only, risk limits,
// reserved exposure) before its call.
const SideEffectOrder = "order"

// orderGate places an http call under the order desk's checks:
//
//	{"type": "http", "config": {"method": "POST", "url": "https://api.exchange.com/v3/order",
//	  "side_effect": "order",
//	  "order": {"symbol": "inputs.symbol", "side": "'buy'", "quantity": "inputs.qty", "reference_price": "inputs.price"},
//	  ...}}
//
// config.order describes the order as an order node's config does (its fields are
// expressions), so that risk limits can value it; no intent is published.
type orderGate struct {
	*httpRunner
	order *orderRunner
}

// gateOrder wraps an http runner whose config declares side_effect order.
func gateOrder(r *httpRunner, n workflow.Node, sideEffect string, order json.RawMessage, desk OrderDesk) (Runner, error) {
	switch {
	case sideEffect == "" && len(order) == 0:
		return r, nil
	case sideEffect != SideEffectOrder:
		return nil, fmt.Errorf("config.side_effect must be %q (the call places an order) or absent, got %q", SideEffectOrder, sideEffect)
	case len(order) == 0:
		return nil, errors.New(`config.order is required with side_effect order: describe the order ({"symbol": ..., "side": ..., "quantity": ..., "reference_price": ...}) so that risk limits can value it`)
	}
	o, err := Order{Desk: desk}.Compile(workflow.Node{ID: n.ID, Type: TypeOrder, Config: order})
	if err != nil {
		return nil, fmt.Errorf("config.order: %v", err)
	}
	return &orderGate{httpRunner: r, order: o.(*orderRunner)}, nil
}

// orderReleaser releases the exposure an order reserved when it was not placed.
type orderReleaser interface {
	ReleaseOrder(ctx context.Context, o *contract.OrderIntent) error
}

// Run checks the order with the desk, then makes the call. When the provider
// refused it (a 4xx other than 408 and 429), the order was not placed: its
// reserved exposure is released.
func (g *orderGate) Run(ctx context.Context, in Input) (Result, error) {
	if g.order.desk == nil {
		return Result{}, Permanent(KindNode, errors.New("the http node type was registered without an order desk; only a worker runs http nodes that place orders"))
	}
	o, err := g.order.intent(in.Env)
	if err != nil {
		return Result{}, err
	}
	if err := g.order.desk.CheckOrder(ctx, o); err != nil {
		return Result{}, err
	}
	res, err := g.httpRunner.Run(ctx, in)
	if rel, ok := g.order.desk.(orderReleaser); ok && KindOf(err) == KindHTTPStatus && !IsTransient(err) {
		if rerr := rel.ReleaseOrder(context.WithoutCancel(ctx), o); rerr != nil {
			err = fmt.Errorf("%w (and releasing its reserved exposure failed: %v)", err, rerr)
		}
	}
	return res, err
}
