package contract

import "time"

// Order sides and types.
const (
	SideBuy         = "buy"
	SideSell        = "sell"
	OrderTypeMarket = "market"
	OrderTypeLimit  = "limit"
)

// OrderIntent is published by order nodes to flow.orders.<bot_id>, with
// Nats-Msg-Id = client_order_id = <execution_id>.<node_id>.
type OrderIntent struct {
	ClientOrderID  string    `json:"client_order_id"`
	ExecutionID    string    `json:"execution_id"`
	NodeID         string    `json:"node_id"`
	WorkflowID     string    `json:"workflow_id"`
	BotID          string    `json:"bot_id"`
	StrategyID     string    `json:"strategy_id,omitempty"`
	CorrelationID  string    `json:"correlation_id"`
	Symbol         string    `json:"symbol"`
	Side           string    `json:"side"`
	Quantity       float64   `json:"quantity"`
	Type           string    `json:"type"`
	LimitPrice     float64   `json:"limit_price,omitempty"`
	ReferencePrice float64   `json:"reference_price,omitempty"`
	ReduceOnly     bool      `json:"reduce_only"`
	CreatedAt      time.Time `json:"created_at"`
	Traceparent    string    `json:"traceparent,omitempty"`
}

// Price is the price used to value the order: the limit price, else the reference price.
func (o *OrderIntent) Price() float64 {
	if o.LimitPrice > 0 {
		return o.LimitPrice
	}
	return o.ReferencePrice
}

// Order mark states.
const (
	OrderPublishing = "publishing"
	OrderPlaced     = "placed"
)

// OrderMark is the document at workflow.<wf>.execution.<exec>.order.<node>: written
// before an order intent is published, completed with its stream sequence after.
type OrderMark struct {
	ClientOrderID string    `json:"client_order_id"`
	State         string    `json:"state"`
	StreamSeq     uint64    `json:"stream_seq,omitempty"`
	At            time.Time `json:"at"`
	// Intent is the order as first recorded: a replay places or reports this one.
	Intent *OrderIntent `json:"intent,omitempty"`
}

// Risk limit types.
const (
	LimitDailyLoss    = "daily_loss"
	LimitPositionSize = "position_size"
	LimitDrawdown     = "drawdown_pct"
	LimitCustom       = "custom"
)

// RiskLimit is one limit. It is breached when its value exceeds Threshold (custom:
// when its expression is true).
type RiskLimit struct {
	ID        string  `json:"id"`
	Type      string  `json:"type"`
	Threshold float64 `json:"threshold,omitempty"`
	// Symbol restricts a position_size limit to one symbol; empty means every symbol.
	Symbol string `json:"symbol,omitempty"`
	// Basis of a position_size limit: quantity (default) or notional.
	Basis string `json:"basis,omitempty"`
	// Expression of a custom limit, over the metrics: true means breached.
	Expression string `json:"expression,omitempty"`
	AutoHalt   bool   `json:"auto_halt"`
}

// RiskLimits is the document at flow_risk limits.<scope>.
type RiskLimits struct {
	Limits []RiskLimit `json:"limits"`
}

// Position is a bot's position in one symbol. Custom limit expressions read its
// fields by their JSON names (positions.BTCUSDT.quantity).
type Position struct {
	Quantity float64 `json:"quantity" expr:"quantity"`
	Notional float64 `json:"notional,omitempty" expr:"notional"`
}

// RiskMetrics is the document at flow_risk metrics.<bot_id>.
type RiskMetrics struct {
	BotID      string `json:"bot_id"`
	StrategyID string `json:"strategy_id,omitempty"`
	// TradingDay is the day DailyPnL belongs to (YYYY-MM-DD in the trading day's zone,
	// after its reset time); a DailyPnL of another day counts as zero.
	TradingDay string              `json:"trading_day,omitempty"`
	DailyPnL   float64             `json:"daily_pnl"`
	Equity     float64             `json:"equity,omitempty"`
	PeakEquity float64             `json:"peak_equity,omitempty"`
	Positions  map[string]Position `json:"positions,omitempty"`
	Custom     map[string]float64  `json:"custom,omitempty"`
	UpdatedAt  time.Time           `json:"updated_at"`
	// AppliedUpdates are the ids of the last updates applied, oldest first (a
	// bounded number), so that an update replayed after a crash is applied once.
	AppliedUpdates []string `json:"applied_updates,omitempty"`
}

// RiskUpdate changes a bot's metrics: PnL is added to the day's PnL, the others are set.
type RiskUpdate struct {
	// ID identifies the update: one whose id is among the metrics' AppliedUpdates is
	// skipped. A risk_update node's is <execution_id>.<node_id>; empty means the
	// update is not deduplicated.
	ID         string              `json:"id,omitempty"`
	StrategyID string              `json:"strategy_id,omitempty"`
	PnL        *float64            `json:"pnl,omitempty"`
	Equity     *float64            `json:"equity,omitempty"`
	Positions  map[string]Position `json:"positions,omitempty"`
	Custom     map[string]float64  `json:"custom,omitempty"`
}

// RiskLimitsKey is the flow_risk key of a scope's limits.
func RiskLimitsKey(scope string) string { return "limits." + scope }

// RiskMetricsKey is the flow_risk key of a bot's metrics.
func RiskMetricsKey(botID string) string { return "metrics." + botID }

// RiskReservationsKey is the flow_risk key of the exposure a bot's orders have
// reserved and the metrics do not show yet (see Reservations).
func RiskReservationsKey(botID string) string { return "reservations." + botID }

// Reservations are the orders of one bot that passed the risk limits and whose
// effect the bot's metrics may not show yet. Workers add one, with
// compare-and-set, before an order is published, so that orders racing on
// several workers never together exceed a limit.
type Reservations struct {
	BotID  string        `json:"bot_id"`
	Orders []Reservation `json:"orders"`
}

// Reservation is one order's reserved effect on its bot's position.
type Reservation struct {
	ClientOrderID string  `json:"client_order_id"`
	Symbol        string  `json:"symbol"`
	Side          string  `json:"side"`
	Quantity      float64 `json:"quantity"`
	// Price values the order for notional limits (its limit or reference price).
	Price float64   `json:"price,omitempty"`
	At    time.Time `json:"at"`
}
