package risk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/schemas"
)

// newTestRisk is a Risk with configured limits over a flow_risk bucket of its own
// server, as if its watch had loaded the empty bucket: enough for CheckOrder while
// no limit halts (it would need the controller).
func newTestRisk(t *testing.T, limits map[string][]contract.RiskLimit) *Risk {
	t.Helper()
	return riskOn(t, riskBucket(t), limits)
}

// riskBucket is a flow_risk bucket on a server of its own.
func riskBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js := natstest.JetStream(t, natstest.Start(t).URL())
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: contract.BucketRisk, History: 16})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// riskOn is a Risk over kv, as one worker's, loaded.
func riskOn(t *testing.T, kv jetstream.KeyValue, limits map[string][]contract.RiskLimit) *Risk {
	t.Helper()
	r, err := NewRisk(kv, nil, nil, RiskConfig{Limits: limits}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r.ready.Store(true)
	return r
}

// scriptedKV is a flow_risk bucket whose watches the test drives: each WatchAll
// returns the next channel of watches.
type scriptedKV struct {
	jetstream.KeyValue
	watches chan chan jetstream.KeyValueEntry
}

func (kv *scriptedKV) WatchAll(context.Context, ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return channelWatcher(<-kv.watches), nil
}

type channelWatcher chan jetstream.KeyValueEntry

func (w channelWatcher) Updates() <-chan jetstream.KeyValueEntry { return w }
func (w channelWatcher) Stop() error                             { return nil }

// Orders are not checked against limits that are not loaded: not before the watch
// delivered the bucket's initial values, nor while a broken watch is rebuilt.
func TestOrdersWaitUntilTheRiskLimitsAreLoaded(t *testing.T) {
	kv := &scriptedKV{KeyValue: riskBucket(t), watches: make(chan chan jetstream.KeyValueEntry)}
	r, err := NewRisk(kv, nil, nil, RiskConfig{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	buy := &contract.OrderIntent{ClientOrderID: "x.buy", BotID: "b1", Symbol: "BTCUSDT", Side: contract.SideBuy, Quantity: 1, ReferencePrice: 65000}
	ready := func(want bool) {
		t.Helper()
		natstest.WaitFor(t, 5*time.Second, func() error {
			if r.Ready() != want {
				return fmt.Errorf("Ready() = %v, want %v", !want, want)
			}
			return nil
		})
		err := r.CheckOrder(ctx, buy)
		if want && err != nil || !want && !errors.Is(err, ErrRiskUnknown) {
			t.Fatalf("ready %v: CheckOrder = %v", want, err)
		}
	}

	ready(false)
	first := make(chan jetstream.KeyValueEntry, 1)
	kv.watches <- first
	ready(false) // watching, the initial values not yet in
	first <- nil
	ready(true)
	close(first) // the watch breaks
	ready(false)
	second := make(chan jetstream.KeyValueEntry, 1)
	kv.watches <- second
	second <- nil
	ready(true)
	if msg := ErrRiskUnknown.Error(); !strings.Contains(msg, "not loaded yet") || !strings.Contains(msg, "retried") {
		t.Errorf("ErrRiskUnknown says %q", msg)
	}
}

// Revision says which writes of the bucket are in force: once it reaches the
// revision a limit was written at, orders meet that limit.
func TestRevisionSaysWhichLimitsAreInForce(t *testing.T) {
	kv := riskBucket(t)
	r, err := NewRisk(kv, nil, nil, RiskConfig{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	data, err := json.Marshal(contract.RiskLimits{Limits: []contract.RiskLimit{{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, contract.RiskLimitsKey("global"), data)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if got := r.Revision(); got < rev {
			return fmt.Errorf("Revision() = %d, the limit was written at %d", got, rev)
		}
		return nil
	})
	big := &contract.OrderIntent{ClientOrderID: "x.buy", BotID: "b1", Symbol: "BTCUSDT", Side: contract.SideBuy, Quantity: 2, ReferencePrice: 65000}
	if err := r.CheckOrder(ctx, big); !errors.Is(err, ErrRiskLimit) {
		t.Fatalf("an order over the limit in force: %v, want %v", err, ErrRiskLimit)
	}
}

// A market order without a price cannot be valued against a notional limit: it is
// refused, and not counted as a breach (no halt, even with auto_halt).
func TestOrderWithoutPriceIsRefusedUnderANotionalLimit(t *testing.T) {
	r := newTestRisk(t, map[string][]contract.RiskLimit{
		"bot.b1": {{ID: "btc-notional", Type: contract.LimitPositionSize, Basis: "notional", Symbol: "BTCUSDT", Threshold: 100000, AutoHalt: true}},
	})
	n := 0
	order := func(bot, symbol string, price float64, reduceOnly bool) *contract.OrderIntent {
		n++
		return &contract.OrderIntent{ClientOrderID: fmt.Sprintf("x.o%d", n), BotID: bot, Symbol: symbol, Side: contract.SideBuy, Quantity: 1, Type: contract.OrderTypeMarket, ReferencePrice: price, ReduceOnly: reduceOnly}
	}
	err := r.CheckOrder(context.Background(), order("b1", "BTCUSDT", 0, false))
	var re *RiskError
	if !errors.As(err, &re) || re.Halted || !strings.Contains(err.Error(), "btc-notional") ||
		!strings.Contains(err.Error(), "cannot be valued") || !strings.Contains(err.Error(), "reference_price") {
		t.Fatalf("unpriced order: %v, want a RiskError saying it cannot be valued", err)
	}
	for _, o := range []*contract.OrderIntent{
		order("b1", "BTCUSDT", 65000, false), // priced, within the limit
		order("b1", "ETHUSDT", 0, false),     // another symbol
		order("b2", "BTCUSDT", 0, false),     // another bot
		order("b1", "BTCUSDT", 0, true),      // reduce-only
	} {
		if err := r.CheckOrder(context.Background(), o); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

// Limits are checked against each bot's metrics, which name its strategy but no
// workflow: limits of a workflow scope would never apply, so they are refused.
func TestRiskLimitsOfAWorkflowScopeAreRefused(t *testing.T) {
	for scope, ok := range map[string]bool{"global": true, "bot.b1": true, "strategy.s1": true, "workflow.trade": false, "desk": false} {
		if err := CheckLimitScope(scope); (err == nil) != ok || err != nil && !strings.Contains(err.Error(), "bot.<id> or strategy.<id>") {
			t.Errorf("CheckLimitScope(%s) = %v", scope, err)
		}
	}
	_, err := NewRisk(nil, nil, nil, RiskConfig{Limits: map[string][]contract.RiskLimit{
		"workflow.trade": {{ID: "loss", Type: contract.LimitDailyLoss, Threshold: 100}},
	}}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "workflow.trade") {
		t.Errorf("limits of workflow.trade configured: %v", err)
	}
}

// The worker's --risk-limits file is checked like the limits in KV, scope by scope.
func TestParseLimitsByScope(t *testing.T) {
	limits, err := ParseLimitsByScope([]byte(`{"global": [{"id": "loss", "type": "daily_loss", "threshold": 1000, "auto_halt": true}],
		"bot.b1": [{"id": "btc", "type": "position_size", "symbol": "BTCUSDT", "threshold": 2}]}`))
	if err != nil || len(limits) != 2 || !limits["global"][0].AutoHalt || limits["bot.b1"][0].Symbol != "BTCUSDT" {
		t.Fatalf("limits %+v, err %v", limits, err)
	}
	for _, tc := range []struct{ file, want string }{
		{`{"bot.b1": [{"id": "loss", "type": "daily_loss", "threshold": 1000, "autohalt": true}]}`, "scope bot.b1: risk limits does not match"},
		{`{"global": [{"id": "loss", "type": "daily_los", "threshold": 1000}]}`, "scope global"},
		{`{"global": [{"id": "loss", "type": "daily_loss", "threshold": 1000}, {"id": "loss", "type": "drawdown_pct", "threshold": 10}]}`, "duplicate"},
		{`{"global": {"id": "loss"}}`, "scope global"},
		{`{"workflow.trade": []}`, "workflow.<id> scope"},
		{`[{"id": "loss"}]`, "cannot unmarshal"},
	} {
		if _, err := ParseLimitsByScope([]byte(tc.file)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.file, err, tc.want)
		}
	}
}

// Orders of one bot racing on several workers never together pass a limit: each
// reserves its exposure with compare-and-set before it may be placed.
func TestConcurrentOrdersReserveExposureAtomically(t *testing.T) {
	kv := riskBucket(t)
	limits := map[string][]contract.RiskLimit{
		"bot.b1": {{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 10}},
	}
	workers := []*Risk{riskOn(t, kv, limits), riskOn(t, kv, limits), riskOn(t, kv, limits)}
	var wg sync.WaitGroup
	var allowed, refused atomic.Int32
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &contract.OrderIntent{ClientOrderID: fmt.Sprintf("x%d.buy", i), BotID: "b1", Symbol: "BTCUSDT", Side: contract.SideBuy, Quantity: 1, ReferencePrice: 65000}
			err := workers[i%len(workers)].CheckOrder(context.Background(), o)
			var re *RiskError
			switch {
			case err == nil:
				allowed.Add(1)
			case errors.As(err, &re):
				refused.Add(1)
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("neither allowed nor refused by the limit: %v", err)
	}
	if allowed.Load() != 10 || refused.Load() != 54 {
		t.Fatalf("%d orders allowed, %d refused; want 10 and 54", allowed.Load(), refused.Load())
	}
	// A retried order keeps its reservation and passes again; a new one is refused.
	again := &contract.OrderIntent{ClientOrderID: "x0.buy", BotID: "b1", Symbol: "BTCUSDT", Side: contract.SideBuy, Quantity: 1, ReferencePrice: 65000}
	e, err := kv.Get(context.Background(), contract.RiskReservationsKey("b1"))
	if err != nil || !strings.Contains(string(e.Value()), `"client_order_id":"x`) {
		t.Fatalf("reservations: %v", err)
	}
	if err := schemas.ValidateJSON(schemas.RiskReservations, e.Value()); err != nil {
		t.Errorf("reservations do not match their schema: %v", err)
	}
	var held contract.Reservations
	_ = json.Unmarshal(e.Value(), &held)
	again.ClientOrderID = held.Orders[0].ClientOrderID
	if err := workers[0].CheckOrder(context.Background(), again); err != nil {
		t.Errorf("a reserved order checked again: %v", err)
	}
	// Its bot's metrics, updated after the orders, settle the reservations.
	qty := 10.0
	m, err := UpdateMetrics(context.Background(), kv, "b1", contract.RiskUpdate{Positions: map[string]contract.Position{"BTCUSDT": {Quantity: qty}}}, TradingDay{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	workers[0].mu.Lock()
	workers[0].metrics["b1"] = metricsEntry{m: m}
	workers[0].mu.Unlock()
	sell := &contract.OrderIntent{ClientOrderID: "y.sell", BotID: "b1", Symbol: "BTCUSDT", Side: contract.SideSell, Quantity: 5, ReferencePrice: 65000}
	if err := workers[0].CheckOrder(context.Background(), sell); err != nil {
		t.Errorf("a sale within the limit once the fills are reported: %v", err)
	}
}
