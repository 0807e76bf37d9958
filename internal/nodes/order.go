package nodes

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/workflow"
)

// Error kinds of order nodes.
const (
	KindInvalidOrder = "invalid_order"
)

// DefaultOrderProvider names the breaker of order nodes that name no provider.
const DefaultOrderProvider = "orders"

// placeTimeout bounds placing an order once it is allowed.
const placeTimeout = 10 * time.Second

// OrderDesk is what order nodes need from the worker.
type OrderDesk interface {
	// CheckOrder refuses an order that may not be placed now (a halt, a pause unless
	// reduce-only, an unconfirmed emergency state, a risk limit), with a *Error
	// saying why.
	CheckOrder(ctx context.Context, o *contract.OrderIntent) error
	// PlaceOrder stores the intent with its client order id as message id, recording
	// it in the node's mark (nil when it has none yet), and returns its stream
	// sequence and whether it was already stored.
	PlaceOrder(ctx context.Context, marks OrderMarks, mark *contract.OrderMark, o *contract.OrderIntent) (seq uint64, duplicate bool, err error)
}

// Order publishes an order intent to flow.orders.<bot_id>, once per execution and
// node however often the node is replayed:
//
//	{"type": "order", "config": {"symbol": "inputs.symbol", "side": "nodes.signal.side",
//	  "quantity": "0.01", "order_type": "limit", "limit_price": "nodes.quote.bid", "reduce_only": false}}
//
// symbol, side, quantity, limit_price and reference_price are expressions;
// order_type is market (default) or limit; reduce_only is a boolean or an expression.
type Order struct {
	// Desk checks and places orders; nil when only compiling (the publisher validates).
	Desk OrderDesk
}

type orderConfig struct {
	Symbol         string          `json:"symbol"`
	Side           string          `json:"side"`
	Quantity       string          `json:"quantity"`
	OrderType      string          `json:"order_type"`
	LimitPrice     string          `json:"limit_price"`
	ReferencePrice string          `json:"reference_price"`
	ReduceOnly     json.RawMessage `json:"reduce_only"`
}

type orderRunner struct {
	provider                   string
	desk                       OrderDesk
	nodeID, orderType          string
	symbol, side, quantity     *Expression
	limitPrice, referencePrice *Expression
	reduceOnly                 *Expression
	reduceOnlyFixed            bool
}

// Compile implements Type.
func (o Order) Compile(n workflow.Node) (Runner, error) {
	var cfg orderConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	r := &orderRunner{desk: o.Desk, nodeID: n.ID, orderType: cfg.OrderType, provider: cmp.Or(n.Provider, DefaultOrderProvider)}
	if r.orderType == "" {
		r.orderType = contract.OrderTypeMarket
	}
	if r.orderType != contract.OrderTypeMarket && r.orderType != contract.OrderTypeLimit {
		return nil, fmt.Errorf("config.order_type must be market or limit, got %q", cfg.OrderType)
	}
	field := func(name, src string, into **Expression) error {
		e, err := CompileExpression(src)
		if err != nil {
			return fmt.Errorf("config.%s: %v", name, err)
		}
		*into = e
		return nil
	}
	err := errors.Join(field("symbol", cfg.Symbol, &r.symbol), field("side", cfg.Side, &r.side), field("quantity", cfg.Quantity, &r.quantity))
	if err == nil && r.orderType == contract.OrderTypeLimit {
		err = field("limit_price", cfg.LimitPrice, &r.limitPrice)
	}
	if err == nil && cfg.ReferencePrice != "" {
		err = field("reference_price", cfg.ReferencePrice, &r.referencePrice)
	}
	if err != nil {
		return nil, err
	}
	if len(cfg.ReduceOnly) > 0 {
		var fixed bool
		var src string
		switch {
		case json.Unmarshal(cfg.ReduceOnly, &fixed) == nil:
			r.reduceOnlyFixed = fixed
		case json.Unmarshal(cfg.ReduceOnly, &src) == nil:
			if err := field("reduce_only", src, &r.reduceOnly); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("config.reduce_only must be true, false or an expression")
		}
	}
	return r, nil
}

// Provider implements Provider: order attempts run under the resilience chain, so
// an unconfirmed emergency state or an unreachable stream is retried with backoff.
func (r *orderRunner) Provider() string { return r.provider }

// Run reads the node's mark first: an order already placed (a replay after a
// crash or a takeover) returns the stored intent with duplicate: true and is
// neither checked nor placed again, so a pause, a halt or a risk limit reached
// since cannot fail an order that exists. A new order, or one a worker stopped
// placing, is checked, then placed.
func (r *orderRunner) Run(ctx context.Context, in Input) (Result, error) {
	o, err := r.intent(in.Env)
	if err != nil {
		return Result{}, err
	}
	if in.Marks == nil {
		return Result{}, Permanent(KindNode, fmt.Errorf("order %s: no execution owns this run, so the order cannot be recorded", o.ClientOrderID))
	}
	mark, found, err := in.Marks.OrderMark(ctx, r.nodeID)
	if errors.Is(err, ErrStopped) {
		return Result{}, err
	}
	if err != nil {
		return Result{}, Transient(KindNode, fmt.Errorf("read the mark of order %s: %w", o.ClientOrderID, err))
	}
	if !found {
		mark = nil
	}
	if mark != nil && mark.Intent != nil {
		o = mark.Intent // the intent first recorded, whatever the replay computed
	}
	if mark != nil && mark.State == contract.OrderPlaced {
		return orderOutputs(o, mark.StreamSeq, true), nil
	}
	if err := r.desk.CheckOrder(ctx, o); err != nil {
		return Result{}, err
	}
	// Once allowed, the order is placed and recorded even if a halt lands now: a
	// publish cut off half way would leave an intent stored but not recorded.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), placeTimeout)
	defer cancel()
	seq, dup, err := r.desk.PlaceOrder(pctx, in.Marks, mark, o)
	if err != nil {
		var known *Error
		if errors.As(err, &known) || errors.Is(err, ErrStopped) {
			return Result{}, err
		}
		return Result{}, Transient(KindNode, fmt.Errorf("place order %s: %w", o.ClientOrderID, err))
	}
	return orderOutputs(o, seq, dup), nil
}

// orderOutputs are an order node's outputs.
func orderOutputs(o *contract.OrderIntent, seq uint64, dup bool) Result {
	out := map[string]any{
		"client_order_id": o.ClientOrderID, "symbol": o.Symbol, "side": o.Side, "quantity": o.Quantity,
		"order_type": o.Type, "reduce_only": o.ReduceOnly, "stream_seq": seq, "duplicate": dup,
	}
	if o.LimitPrice > 0 {
		out["limit_price"] = o.LimitPrice
	}
	return Result{Outputs: out}
}

// intent evaluates the order's fields and checks them.
func (r *orderRunner) intent(env *Env) (*contract.OrderIntent, error) {
	x := env.Execution
	o := &contract.OrderIntent{
		ClientOrderID: x.ID + "." + r.nodeID, ExecutionID: x.ID, NodeID: r.nodeID, WorkflowID: x.WorkflowID,
		BotID: x.BotID, StrategyID: x.StrategyID, CorrelationID: x.CorrelationID,
		Type: r.orderType, ReduceOnly: r.reduceOnlyFixed, CreatedAt: time.Now().UTC(), Traceparent: x.Traceparent,
	}
	if o.BotID == "" {
		o.BotID = contract.NoBot
	}
	invalid := func(format string, args ...any) error {
		return Permanent(KindInvalidOrder, fmt.Errorf("order %s: "+format, append([]any{o.ClientOrderID}, args...)...))
	}
	var err error
	if o.Symbol, err = evalString(r.symbol, env); err != nil || o.Symbol == "" {
		return nil, invalid("symbol must be a non-empty string (%v)", err)
	}
	if o.Side, err = evalString(r.side, env); err != nil || (o.Side != contract.SideBuy && o.Side != contract.SideSell) {
		return nil, invalid("side must be buy or sell, got %q (%v)", o.Side, err)
	}
	if o.Quantity, err = evalNumber(r.quantity, env); err != nil || o.Quantity <= 0 {
		return nil, invalid("quantity must be a positive number, got %v (%v)", o.Quantity, err)
	}
	if r.limitPrice != nil {
		if o.LimitPrice, err = evalNumber(r.limitPrice, env); err != nil || o.LimitPrice <= 0 {
			return nil, invalid("limit_price must be a positive number, got %v (%v)", o.LimitPrice, err)
		}
	}
	if r.referencePrice != nil {
		if o.ReferencePrice, err = evalNumber(r.referencePrice, env); err != nil || o.ReferencePrice < 0 {
			return nil, invalid("reference_price must be a number >= 0, got %v (%v)", o.ReferencePrice, err)
		}
	}
	if r.reduceOnly != nil {
		v, err := r.reduceOnly.Eval(env)
		b, ok := v.(bool)
		if err != nil || !ok {
			return nil, invalid("reduce_only must be a boolean, got %v (%v)", v, err)
		}
		o.ReduceOnly = b
	}
	return o, nil
}

func evalString(e *Expression, env *Env) (string, error) {
	v, err := e.Eval(env)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", errors.New("not a string")
	}
	return s, nil
}

func evalNumber(e *Expression, env *Env) (float64, error) {
	v, err := e.Eval(env)
	if err != nil {
		return 0, err
	}
	var f float64
	switch n := v.(type) {
	case float64:
		f = n
	case int:
		f = float64(n)
	case int64:
		f = float64(n)
	default:
		return 0, fmt.Errorf("%v is not a number", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%v is not a finite number", f)
	}
	return f, nil
}
