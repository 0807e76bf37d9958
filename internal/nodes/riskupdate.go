package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/workflow"
)

// MetricsUpdater updates a bot's risk metrics.
type MetricsUpdater interface {
	UpdateMetrics(ctx context.Context, botID string, u contract.RiskUpdate) (*contract.RiskMetrics, error)
}

// RiskUpdate updates the risk metrics of the request's bot (flow_risk
// metrics.<bot_id>), which every worker evaluates against the risk limits:
//
//	{"type": "risk_update", "config": {"pnl": "nodes.fill.realized_pnl", "equity": "nodes.account.equity",
//	  "position": {"symbol": "inputs.symbol", "quantity": "nodes.account.qty", "notional": "nodes.account.notional"},
//	  "custom": {"open_orders": "nodes.account.open_orders"}}}
//
// Every field is an expression and optional: pnl is added to the trading day's PnL,
// the others are set. The update's id is <execution_id>.<node_id>, so that a node
// replayed after a crash does not add its PnL twice.
type RiskUpdate struct {
	Metrics MetricsUpdater
}

type riskUpdateConfig struct {
	PnL      string `json:"pnl"`
	Equity   string `json:"equity"`
	Position *struct {
		Symbol   string `json:"symbol"`
		Quantity string `json:"quantity"`
		Notional string `json:"notional"`
	} `json:"position"`
	Custom map[string]string `json:"custom"`
}

type riskUpdateRunner struct {
	metrics                    MetricsUpdater
	nodeID                     string
	pnl, equity                *Expression
	symbol, quantity, notional *Expression
	customNames                []string
	custom                     []*Expression
}

// Compile implements Type.
func (t RiskUpdate) Compile(n workflow.Node) (Runner, error) {
	var cfg riskUpdateConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	r := &riskUpdateRunner{metrics: t.Metrics, nodeID: n.ID}
	optional := func(name, src string, into **Expression) error {
		if src == "" {
			return nil
		}
		e, err := CompileExpression(src)
		if err != nil {
			return fmt.Errorf("config.%s: %v", name, err)
		}
		*into = e
		return nil
	}
	if err := errors.Join(optional("pnl", cfg.PnL, &r.pnl), optional("equity", cfg.Equity, &r.equity)); err != nil {
		return nil, err
	}
	if p := cfg.Position; p != nil {
		if p.Symbol == "" || p.Quantity == "" {
			return nil, fmt.Errorf("config.position needs symbol and quantity expressions")
		}
		if err := errors.Join(optional("position.symbol", p.Symbol, &r.symbol), optional("position.quantity", p.Quantity, &r.quantity),
			optional("position.notional", p.Notional, &r.notional)); err != nil {
			return nil, err
		}
	}
	for name, src := range cfg.Custom {
		e, err := CompileExpression(src)
		if err != nil {
			return nil, fmt.Errorf("config.custom.%s: %v", name, err)
		}
		r.customNames, r.custom = append(r.customNames, name), append(r.custom, e)
	}
	if r.pnl == nil && r.equity == nil && r.symbol == nil && len(r.custom) == 0 {
		return nil, fmt.Errorf("config must set at least one of pnl, equity, position, custom")
	}
	return r, nil
}

func (r *riskUpdateRunner) Run(ctx context.Context, in Input) (Result, error) {
	bot := in.Env.Execution.BotID
	if bot == "" {
		return Result{}, Permanent(KindNode, errors.New("risk_update needs the request's bot_id: metrics are kept per bot"))
	}
	u := contract.RiskUpdate{ID: in.Env.Execution.ID + "." + r.nodeID, StrategyID: in.Env.Execution.StrategyID}
	num := func(e *Expression) (*float64, error) {
		if e == nil {
			return nil, nil
		}
		v, err := evalNumber(e, in.Env)
		if err != nil {
			return nil, Permanent(KindExpression, err)
		}
		return &v, nil
	}
	var err error
	if u.PnL, err = num(r.pnl); err != nil {
		return Result{}, err
	}
	if u.Equity, err = num(r.equity); err != nil {
		return Result{}, err
	}
	if r.symbol != nil {
		sym, err := evalString(r.symbol, in.Env)
		if err != nil {
			return Result{}, Permanent(KindExpression, fmt.Errorf("position.symbol: %w", err))
		}
		qty, err := num(r.quantity)
		if err != nil {
			return Result{}, err
		}
		p := contract.Position{Quantity: *qty}
		if notional, err := num(r.notional); err != nil {
			return Result{}, err
		} else if notional != nil {
			p.Notional = *notional
		}
		u.Positions = map[string]contract.Position{sym: p}
	}
	for i, e := range r.custom {
		v, err := num(e)
		if err != nil {
			return Result{}, err
		}
		if u.Custom == nil {
			u.Custom = map[string]float64{}
		}
		u.Custom[r.customNames[i]] = *v
	}
	m, err := r.metrics.UpdateMetrics(ctx, bot, u)
	if err != nil {
		return Result{}, Transient(KindNode, err)
	}
	data, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	delete(out, "applied_updates") // bookkeeping, not the bot's risk
	return Result{Outputs: out}, nil
}
