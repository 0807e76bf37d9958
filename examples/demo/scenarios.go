package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/flowguard/flowguard/examples/mockexchange"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
)

// normal: bot b1 trades BTCUSDT under a daily loss limit.
func (d *demo) normal(ctx context.Context) error {
	d.n.title("1. Normal trading: bot b1 reads the book and its balance, signals, orders; the router fills; a risk_update books each fill")
	if err := d.client.SetLimit(ctx, "bot.b1", contract.RiskLimit{ID: "b1-daily-loss", Type: "daily_loss", Threshold: dailyLossLimit, AutoHalt: true}); err != nil {
		return err
	}
	d.n.say("operator: bot b1 may lose at most %.0f USDT a day (limit b1-daily-loss, auto-halt)", dailyLossLimit)
	for range d.t.normalTrades {
		if _, err := d.trade(ctx, "b1", "BTCUSDT"); err != nil {
			return err
		}
	}
	return nil
}

// outage: the exchange answers 503; calls retry, the breaker opens and fails fast,
// then a probe through half-open closes it once the exchange is back.
func (d *demo) outage(ctx context.Context) error {
	d.n.title("2. Exchange outage for %s: retries, the breaker opens and fails fast, then recovers through half-open", d.t.outage)
	if err := d.setFaults(ctx, mockexchange.Faults{OutageFor: d.t.outage}); err != nil {
		return err
	}
	d.n.say("exchange: down for %s (every call answers 503)", d.t.outage)
	trips, closes := d.watch.breakerCounts()
	deadline := time.Now().Add(60 * time.Second)
	recovered := false
	for !recovered {
		if time.Now().After(deadline) {
			return fmt.Errorf("the breaker did not recover within 60s of the outage")
		}
		ev, err := d.trade(ctx, "b1", "BTCUSDT")
		if err != nil {
			return err
		}
		t, c := d.watch.breakerCounts()
		recovered = t > trips && c > closes && ev.Type == contract.ExecutionCompleted
		if !recovered {
			if err := sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
	}
	d.n.say("exchange back: trading goes on")
	return nil
}

// losingStreak: the market falls, every round trip loses, the daily loss limit is
// breached, the worker halts bot b1 and its next trades are refused.
func (d *demo) losingStreak(ctx context.Context) error {
	d.n.title("3. Losing streak: the market falls %d bps a step, b1 breaches its daily loss limit, the worker halts it", -losingDriftBps)
	if err := d.setFaults(ctx, mockexchange.Faults{DriftBps: losingDriftBps}); err != nil {
		return err
	}
	defer func() { _ = d.setFaults(context.WithoutCancel(ctx), mockexchange.Faults{}) }()
	for i := 0; d.watch.state("bot.b1") != emergency.ActionHalt; i++ {
		if i == maxLosingTrades {
			return fmt.Errorf("b1 was not halted after %d losing trades", maxLosingTrades)
		}
		if _, err := d.trade(ctx, "b1", "BTCUSDT"); err != nil {
			return err
		}
	}
	d.n.say("b1 keeps trying while halted:")
	// A trade sent as the halt lands may still meet the limit itself (risk_limit).
	for refused, i := 0, 0; refused < 2; i++ {
		if i == 6 {
			return fmt.Errorf("b1's trades were not refused after its halt")
		}
		ev, err := d.trade(ctx, "b1", "BTCUSDT")
		if err != nil {
			return err
		}
		if ev.Type == contract.ExecutionHalted {
			refused++
		}
	}
	return nil
}

// resume: the operator reviews, raises the limit for the day and resumes b1.
func (d *demo) resume(ctx context.Context) error {
	d.n.title("4. Operator resume: raise b1's limit after review, resume, trading goes on")
	if err := d.setFaults(ctx, mockexchange.Faults{}); err != nil {
		return err
	}
	if err := d.client.SetLimit(ctx, "bot.b1", contract.RiskLimit{ID: "b1-daily-loss", Type: "daily_loss", Threshold: raisedLossLimit, AutoHalt: true}); err != nil {
		return err
	}
	// A resume before the workers have the raised limit would let b1's next order
	// breach the old one and halt b1 again.
	if err := d.waitRiskApplied(ctx, "bot.b1"); err != nil {
		return err
	}
	d.n.say("operator: b1's daily loss limit raised to %.0f USDT for the rest of the day; the workers have it", raisedLossLimit)
	if _, err := d.client.Emergency(ctx, "bot.b1", contract.EmergencyCommand{Action: emergency.ActionResume, Reason: "losses reviewed, limit raised", IssuedBy: "operator"}); err != nil {
		return err
	}
	// The resume reaches the worker through its follower of the emergency stream:
	// a trade sent at the same instant may still find b1 halted.
	for i := 0; d.tradedAfterResume < 2; i++ {
		if i == 8 {
			return fmt.Errorf("b1 did not trade after the resume")
		}
		ev, err := d.trade(ctx, "b1", "BTCUSDT")
		if err != nil {
			return err
		}
		if ev.Type == contract.ExecutionCompleted {
			d.tradedAfterResume++
		} else if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// together: two bots trade two symbols each at once, while rebalance checks run.
func (d *demo) together(ctx context.Context) error {
	d.n.title("5. Two bots, several workflows at once: b1 and b2 trade BTCUSDT and ETHUSDT, rebalance checks run beside")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for _, bot := range []string{"b1", "b2"} {
		for _, symbol := range []string{"BTCUSDT", "ETHUSDT"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range d.t.rounds {
					if _, err := d.trade(ctx, bot, symbol); err != nil {
						errs <- err
						cancel()
						return
					}
				}
			}()
		}
	}
	checks := make(chan struct{})
	go func() {
		defer close(checks)
		for ctx.Err() == nil {
			for _, bot := range []string{"b1", "b2"} {
				if err := d.rebalance(ctx, bot); err != nil && ctx.Err() == nil {
					errs <- err
					cancel()
					return
				}
			}
			_ = sleep(ctx, 300*time.Millisecond)
		}
	}()
	wg.Wait()
	cancel()
	<-checks
	close(errs)
	return <-errs
}

// rebalance runs one rebalance check of bot's BTCUSDT holding.
func (d *demo) rebalance(ctx context.Context, bot string) error {
	ev, err := d.execute(ctx, "rebalance", bot, map[string]any{"exchange": d.exURL, "symbol": "BTCUSDT", "base": "BTC", "max_weight": 0.5})
	if err != nil {
		return err
	}
	switch ev.Type {
	case contract.ExecutionCompleted:
		weight := 0.0
		if e, ok := ev.Outputs["exposure"].(map[string]any); ok {
			weight, _ = e["weight"].(float64)
		}
		if trim, ok := ev.Outputs["trim"].(map[string]any); ok {
			d.n.say("  ⚖ %s rebalance: BTC is %.1f%% of equity, trims %v BTC (reduce-only)", bot, 100*weight, trim["quantity"])
			if id, _ := trim["client_order_id"].(string); id != "" {
				_, err := d.router.waitFill(ctx, id, 60*time.Second)
				return err
			}
			return nil
		}
		d.n.say("  ⚖ %s rebalance check: BTC is %.1f%% of equity, under 50%%: nothing to do", bot, 100*weight)
	default:
		d.n.say("  ⚖ %s rebalance check %s: %s", bot, ev.Type, errText(ev.Error))
	}
	return nil
}
