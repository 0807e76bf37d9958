package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/risk"
)

type riskCmd struct {
	SetLimit    riskSetLimitCmd    `cmd:"" help:"Add or replace (by id) a risk limit of a scope."`
	RemoveLimit riskRemoveLimitCmd `cmd:"" help:"Remove a risk limit of a scope."`
	Report      riskReportCmd      `cmd:"" help:"Report a bot's risk metrics: PnL (added to the day's), equity, positions."`
	Status      riskStatusCmd      `cmd:"" help:"Every scope's limits and every bot's metrics."`
}

type riskSetLimitCmd struct {
	Scope      string  `help:"Scope of the limit, halted when it is breached with --auto-halt: global, bot.<id> or strategy.<id>." default:"global"`
	ID         string  `help:"Limit id, unique within the scope." required:""`
	Type       string  `help:"daily_loss, position_size, drawdown_pct or custom." required:"" enum:"daily_loss,position_size,drawdown_pct,custom"`
	Threshold  float64 `help:"Breached when the value exceeds it (daily loss in account currency, position in quantity or notional, drawdown in percent)."`
	Symbol     string  `help:"position_size: only this symbol (default: every symbol)."`
	Basis      string  `help:"position_size: quantity or notional." enum:",quantity,notional" default:""`
	Expression string  `help:"custom: an expression over daily_pnl, equity, peak_equity, drawdown_pct, positions, custom; true means breached."`
	AutoHalt   bool    `help:"Halt the scope when the limit is breached (else orders are refused)."`
}

func (c *riskSetLimitCmd) Run(e *env) error {
	l := contract.RiskLimit{ID: c.ID, Type: c.Type, Threshold: c.Threshold, Symbol: c.Symbol, Basis: c.Basis, Expression: c.Expression, AutoHalt: c.AutoHalt}
	if err := e.client.SetLimit(e.ctx, c.Scope, l); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "limit %s of %s set\n", c.ID, c.Scope)
	return nil
}

type riskRemoveLimitCmd struct {
	Scope string `help:"Scope of the limit." default:"global"`
	ID    string `arg:"" help:"Limit id."`
}

func (c *riskRemoveLimitCmd) Run(e *env) error {
	if err := e.client.RemoveLimit(e.ctx, c.Scope, c.ID); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "limit %s of %s removed\n", c.ID, c.Scope)
	return nil
}

type riskReportCmd struct {
	Bot             string   `help:"Bot id." required:""`
	Strategy        string   `help:"Strategy of the bot, for strategy-scoped limits."`
	PnL             *float64 `name:"pnl" help:"Realized PnL to add to the trading day's PnL (negative for a loss)."`
	Equity          *float64 `help:"Current equity (the peak is tracked for drawdown)."`
	Position        []string `help:"SYMBOL=QUANTITY or SYMBOL=QUANTITY@NOTIONAL, repeatable; sets the position." sep:"none"`
	Custom          []string `help:"NAME=VALUE, repeatable; custom metrics for custom limits." sep:"none"`
	UpdateID        string   `help:"Id of this report: a report whose id is among the bot's last 256 applied updates is skipped, so that a retried report adds its PnL once (default: none, never skipped)."`
	TradingDayReset string   `help:"Time of day the trading day starts (HH:MM); must match the workers'." default:"00:00" env:"FLOWGUARD_TRADING_DAY_RESET"`
	TradingDayZone  string   `help:"Zone of the trading day; must match the workers'." default:"UTC" env:"FLOWGUARD_TRADING_DAY_ZONE"`
}

func (c *riskReportCmd) Run(e *env) error {
	day, err := risk.ParseTradingDay(c.TradingDayReset, c.TradingDayZone)
	if err != nil {
		return err
	}
	u := contract.RiskUpdate{ID: c.UpdateID, StrategyID: c.Strategy, PnL: c.PnL, Equity: c.Equity}
	for _, p := range c.Position {
		sym, rest, ok := strings.Cut(p, "=")
		qtyText, notionalText, hasNotional := strings.Cut(rest, "@")
		qty, err := strconv.ParseFloat(qtyText, 64)
		if !ok || sym == "" || err != nil {
			return fmt.Errorf("position %q must be SYMBOL=QUANTITY or SYMBOL=QUANTITY@NOTIONAL", p)
		}
		pos := contract.Position{Quantity: qty}
		if hasNotional {
			if pos.Notional, err = strconv.ParseFloat(notionalText, 64); err != nil {
				return fmt.Errorf("position %q: notional must be a number", p)
			}
		}
		if u.Positions == nil {
			u.Positions = map[string]contract.Position{}
		}
		u.Positions[sym] = pos
	}
	for _, kv := range c.Custom {
		name, value, ok := strings.Cut(kv, "=")
		v, err := strconv.ParseFloat(value, 64)
		if !ok || name == "" || err != nil {
			return fmt.Errorf("custom metric %q must be NAME=NUMBER", kv)
		}
		if u.Custom == nil {
			u.Custom = map[string]float64{}
		}
		u.Custom[name] = v
	}
	m, err := e.client.ReportMetrics(e.ctx, c.Bot, u, day)
	if err != nil {
		return err
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	fmt.Fprintln(e.out, string(data))
	return nil
}

type riskStatusCmd struct {
	JSON bool `help:"Print as JSON."`
}

func (c *riskStatusCmd) Run(e *env) error {
	st, err := e.client.Risk(e.ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		data, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(e.out, string(data))
		return nil
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tLIMIT\tTYPE\tTHRESHOLD\tAUTO HALT")
	for _, scope := range sortedKeys(st.Limits) {
		for _, l := range st.Limits[scope] {
			what := l.Type
			if l.Symbol != "" || l.Basis != "" {
				what += fmt.Sprintf(" (%s %s)", l.Symbol, l.Basis)
			}
			threshold := strconv.FormatFloat(l.Threshold, 'g', -1, 64)
			if l.Type == contract.LimitCustom {
				threshold = l.Expression
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", scope, l.ID, what, threshold, l.AutoHalt)
		}
	}
	fmt.Fprintln(tw, "\nBOT\tDAY\tDAILY PNL\tEQUITY\tPEAK\tPOSITIONS")
	for _, bot := range sortedKeys(st.Metrics) {
		m := st.Metrics[bot]
		var pos []string
		for _, sym := range sortedKeys(m.Positions) {
			pos = append(pos, fmt.Sprintf("%s=%g", sym, m.Positions[sym].Quantity))
		}
		fmt.Fprintf(tw, "%s\t%s\t%g\t%g\t%g\t%s\n", bot, m.TradingDay, m.DailyPnL, m.Equity, m.PeakEquity, strings.Join(pos, " "))
	}
	return tw.Flush()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
