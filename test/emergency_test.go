package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/risk"
	"github.com/flowguard/flowguard/internal/worker"
	"github.com/flowguard/flowguard/schemas"
)

// longWorkflow has a node that waits 30 s: a halt must interrupt it.
const longWorkflow = `{"id": "long", "nodes": [
  {"id": "wait", "type": "delay", "config": {"duration": "30s"}},
  {"id": "after", "type": "transform", "depends_on": ["wait"], "config": {"outputs": {"x": "1"}}}
]}`

// quickWorkflow completes at once.
const quickWorkflow = `{"id": "quick", "nodes": [
  {"id": "only", "type": "transform", "config": {"outputs": {"x": "1"}}}
]}`

// tradeWorkflow places one order built from the inputs, after an optional wait.
const tradeWorkflow = `{"id": "trade", "nodes": [
  {"id": "wait", "type": "delay", "config": {"duration": "10ms"}},
  {"id": "buy", "type": "order", "depends_on": ["wait"], "config": {
    "symbol": "inputs.symbol", "side": "inputs.side", "quantity": "inputs.qty",
    "reference_price": "inputs.price", "reduce_only": "inputs.reduce_only == true"}}
]}`

func TestHaltStopsARunningWorkflowWithItsReason(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(longWorkflow)
	id := h.submit(&contract.Request{WorkflowID: "long", BotID: "b1"})
	h.waitEvent("long", id, contract.NodeStarted, "wait", 10*time.Second)

	h.command("global", emergency.ActionHalt, "exchange outage")
	// The 30 s node is interrupted: the execution ends long before it would finish.
	st := h.waitStatus("long", id, 10*time.Second)
	if st.Status != contract.StatusHalted || st.Error == nil || st.Error.Kind != contract.KindHalted || !strings.Contains(st.Error.Message, "exchange outage") {
		t.Fatalf("status = %s %+v", st.Status, st.Error)
	}
	res, err := h.client.Result(h.ctx, "long", id)
	if err != nil || res.Status != contract.StatusHalted || !strings.Contains(res.Error.Message, "exchange outage") {
		t.Fatalf("result = %+v, %v", res, err)
	}
	// The terminal event is published after the terminal status: wait for it.
	h.waitEvent("long", id, contract.ExecutionHalted, "", 10*time.Second)
	evs := h.events("long", id)
	last := evs[len(evs)-1]
	if last.Type != contract.ExecutionHalted || !strings.Contains(last.Error.Message, "exchange outage") {
		t.Errorf("last event = %+v", last)
	}
	interrupted := h.waitEvent("long", id, contract.NodeFailed, "wait", 10*time.Second)
	if interrupted.Error.Kind != contract.KindHalted {
		t.Errorf("interrupted node error = %+v", interrupted.Error)
	}
	for _, ev := range evs {
		if ev.NodeID == "after" {
			t.Errorf("a node after the halt ran: %+v", ev)
		}
	}
}

func TestHaltStopsEveryWorkerAndOnlyResumeLiftsIt(t *testing.T) {
	h := newHarness(t)
	// 3 slots each: the 9 long executions need all three workers, however the
	// fetches happen to interleave.
	for i := range 3 {
		h.startWorker(fmt.Sprintf("w%d", i+1), func(c *worker.Config) { c.Consumer.Concurrency = 3 })
	}
	h.deploy(longWorkflow)
	h.deploy(quickWorkflow)
	var ids []string
	for range 9 {
		ids = append(ids, h.submit(&contract.Request{WorkflowID: "long"}))
	}
	workers := map[string]bool{}
	for _, id := range ids {
		h.waitEvent("long", id, contract.NodeStarted, "wait", 10*time.Second)
		st, err := h.client.Status(h.ctx, "long", id)
		if err != nil {
			t.Fatal(err)
		}
		workers[st.WorkerID] = true
	}
	if len(workers) != 3 {
		t.Fatalf("in-flight work on %d workers, want 3", len(workers))
	}

	// A plain NATS client can halt, as the README shows.
	if err := h.nc.Publish("flow.emergency.global", []byte(`{"action":"halt","reason":"manual"}`)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st := h.waitStatus("long", id, 10*time.Second); st.Status != contract.StatusHalted {
			t.Errorf("%s: %s", id, st.Status)
		}
	}

	// A worker started during the halt refuses to run anything.
	h.startWorker("late", nil)
	refused := h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", refused, 10*time.Second); st.Status != contract.StatusHalted {
		t.Fatalf("request during the halt: %s", st.Status)
	}
	for _, ev := range h.events("quick", refused) {
		if ev.Type == contract.NodeStarted {
			t.Errorf("a node started during the halt: %+v", ev)
		}
	}
	if got := h.waitEvent("quick", refused, contract.ExecutionHalted, "", 10*time.Second); !strings.Contains(got.Reason, "manual") {
		t.Errorf("execution_halted reason = %q", got.Reason)
	}

	// A pause does not lift a halt; resume does.
	h.command("global", emergency.ActionPause, "try pause")
	stillHalted := h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", stillHalted, 10*time.Second); st.Status != contract.StatusHalted {
		t.Fatalf("after a pause: %s", st.Status)
	}
	h.command("global", emergency.ActionResume, "outage over")
	ok := h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", ok, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("after resume: %s", st.Status)
	}
}

func TestScopedHaltsCoverOnlyTheirScope(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(quickWorkflow)
	h.command("bot.A", emergency.ActionHalt, "bot A misbehaves")
	h.command("strategy.S1", emergency.ActionHalt, "strategy S1 paused for review")

	cases := []struct {
		bot, strategy, want string
	}{
		{"A", "S2", contract.StatusHalted},
		{"B", "S2", contract.StatusCompleted},
		{"B", "S1", contract.StatusHalted},
		{"C", "", contract.StatusCompleted},
	}
	for _, tc := range cases {
		id := h.submit(&contract.Request{WorkflowID: "quick", BotID: tc.bot, StrategyID: tc.strategy})
		if st := h.waitStatus("quick", id, 10*time.Second); st.Status != tc.want {
			t.Errorf("bot %s strategy %s: %s, want %s", tc.bot, tc.strategy, st.Status, tc.want)
		}
	}
}

func TestPauseRefusesIncreasingOrdersAndLetsReduceOnlyThrough(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(tradeWorkflow)
	h.command("bot.b1", emergency.ActionPause, "reduce only until the close")

	increase := h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1", Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 0.1, "price": 65000}})
	st := h.waitStatus("trade", increase, 10*time.Second)
	if st.Status != contract.StatusFailed || st.Error.Kind != worker.KindTradingPaused {
		t.Fatalf("increasing order: %s %+v", st.Status, st.Error)
	}
	reduce := h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1", Inputs: map[string]any{"symbol": "BTCUSDT", "side": "sell", "qty": 0.1, "price": 65000, "reduce_only": true}})
	if st := h.waitStatus("trade", reduce, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("reduce-only order: %s %+v", st.Status, st.Error)
	}
	orders := h.messages(contract.StreamOrders, "flow.orders.>")
	if len(orders) != 1 {
		t.Fatalf("%d order intents, want 1", len(orders))
	}
	var o contract.OrderIntent
	if err := json.Unmarshal(orders[0].Data(), &o); err != nil {
		t.Fatal(err)
	}
	if !o.ReduceOnly || o.ClientOrderID != reduce+".buy" || orders[0].Headers().Get(jetstream.MsgIDHeader) != o.ClientOrderID || o.CorrelationID != "exec_trade_"+reduce {
		t.Errorf("intent = %+v", o)
	}
}

func TestBreachedRiskLimitHaltsOnceAcrossWorkers(t *testing.T) {
	h := newHarness(t)
	for i := range 3 {
		h.startWorker(fmt.Sprintf("w%d", i+1), nil)
	}
	h.deploy(quickWorkflow)
	if err := h.client.SetLimit(h.ctx, "bot.b1", contract.RiskLimit{ID: "max-daily-loss", Type: contract.LimitDailyLoss, Threshold: 1000, AutoHalt: true}); err != nil {
		t.Fatal(err)
	}
	loss := -1500.0
	if _, err := h.client.ReportMetrics(h.ctx, "b1", contract.RiskUpdate{PnL: &loss}, risk.TradingDay{}); err != nil {
		t.Fatal(err)
	}
	var halts []contract.EmergencyCommand
	natstest.WaitFor(t, 10*time.Second, func() error {
		halts = nil
		for _, m := range h.messages(contract.StreamEmergency, "flow.emergency.auto.bot.b1") {
			halts = append(halts, emergency.DecodeCommand(m.Data()))
		}
		if len(halts) == 0 {
			return errors.New("no halt yet")
		}
		return nil
	})
	id := h.submit(&contract.Request{WorkflowID: "quick", BotID: "b1"})
	if st := h.waitStatus("quick", id, 10*time.Second); st.Status != contract.StatusHalted {
		t.Errorf("bot b1 after the breach: %s", st.Status)
	}
	// Every worker saw the breach; the stream holds exactly one halt.
	halts = nil
	for _, m := range h.messages(contract.StreamEmergency, "flow.emergency.>") {
		halts = append(halts, emergency.DecodeCommand(m.Data()))
	}
	if len(halts) != 1 {
		t.Fatalf("%d emergency commands, want exactly one halt: %+v", len(halts), halts)
	}
	for _, want := range []string{"max-daily-loss", "1500", "1000"} {
		if !strings.Contains(halts[0].Reason, want) {
			t.Errorf("halt reason %q does not name %s", halts[0].Reason, want)
		}
	}
	board, err := h.client.Board(h.ctx)
	if err != nil || board.Get("bot.b1").State != emergency.Halted {
		t.Errorf("board = %+v, %v", board, err)
	}
}

func TestRiskLimitWithoutAutoHaltRefusesTheOrder(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(tradeWorkflow)
	if err := h.client.SetLimit(h.ctx, "global", contract.RiskLimit{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 1}); err != nil {
		t.Fatal(err)
	}
	// Wait until the worker has the limit: a small order passes, a large one is refused.
	small := h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1", Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 0.5, "price": 65000}})
	if st := h.waitStatus("trade", small, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("small order: %s %+v", st.Status, st.Error)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		big := h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1", Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 2, "price": 65000}})
		st := h.waitStatus("trade", big, 10*time.Second)
		if st.Status != contract.StatusFailed || st.Error.Kind != worker.KindRiskLimit {
			return fmt.Errorf("big order: %s %+v", st.Status, st.Error)
		}
		failed := h.waitEvent("trade", big, contract.NodeFailed, "buy", 10*time.Second)
		if !strings.Contains(failed.Error.Message, "btc-size") {
			return fmt.Errorf("node_failed = %+v", failed.Error)
		}
		return nil
	})
	board, err := h.client.Board(h.ctx)
	if err != nil || board.Get("global").State != emergency.Active {
		t.Errorf("a limit without auto_halt halted: %+v %v", board, err)
	}
}

func TestFailsClosedWhileTheEmergencyStreamCannotBeConfirmed(t *testing.T) {
	h := newHarness(t)
	w, _ := h.startWorkerObj("w1", func(c *worker.Config) { c.EmergencyStaleness = 300 * time.Millisecond })
	h.deploy(`{"id": "slow-trade", "nodes": [
	  {"id": "wait", "type": "delay", "config": {"duration": "1500ms"}},
	  {"id": "buy", "type": "order", "depends_on": ["wait"], "config": {"symbol": "'BTCUSDT'", "side": "'buy'", "quantity": "0.1"}}
	]}`)
	h.deploy(quickWorkflow)
	running := h.submit(&contract.Request{WorkflowID: "slow-trade", BotID: "b1"})
	h.waitEvent("slow-trade", running, contract.NodeStarted, "wait", 10*time.Second)

	// Break the follower: the emergency stream disappears.
	if err := h.js.DeleteStream(h.ctx, contract.StreamEmergency); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if w.Ready() {
			return errors.New("worker still confirms the emergency state")
		}
		return nil
	})
	// The running execution reaches its order, which waits: nothing is placed
	// while the state is unconfirmed.
	h.waitEvent("slow-trade", running, contract.NodeCompleted, "wait", 10*time.Second)
	for _, ev := range h.events("slow-trade", running) {
		if ev.NodeID == "buy" {
			t.Fatalf("the order node went ahead while the emergency state was unknown: %+v", ev)
		}
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.>"); len(orders) != 0 {
		t.Fatalf("%d orders placed while the emergency state was unknown", len(orders))
	}
	// A new request is not started: it waits, in the stream or held by the worker,
	// without spending a delivery.
	waiting := h.submit(&contract.Request{WorkflowID: "quick"})
	cons, err := h.js.Consumer(h.ctx, contract.StreamExec, "flowguard-workers")
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		info, err := cons.Info(h.ctx)
		if err != nil {
			return err
		}
		if info.NumPending+uint64(info.NumAckPending) != 2 || info.NumRedelivered != 0 {
			return fmt.Errorf("pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
	if _, err := h.client.Status(h.ctx, "quick", waiting); err == nil {
		t.Fatal("a request started while the emergency state was unknown")
	}
	if evs := h.events("quick", waiting); len(evs) != 0 {
		t.Fatalf("a request started while the emergency state was unknown: %v", eventTypes(evs))
	}

	// No worker recreates the stream silently: its halts would be lifted without a
	// resume. The operator recreates it deliberately; it starts halted.
	if _, err := provision.Ensure(h.ctx, h.js, provision.Config{}); !errors.Is(err, provision.ErrEmergencyMissing) {
		t.Fatalf("provisioning with the emergency stream deleted: %v", err)
	}
	if err := h.client.InitEmergency(h.ctx, provision.Config{}, "test", "stream deleted by mistake"); err != nil {
		t.Fatal(err)
	}
	for _, held := range []struct{ workflow, id string }{{"slow-trade", running}, {"quick", waiting}} {
		st := h.waitStatus(held.workflow, held.id, 15*time.Second)
		if st.Status != contract.StatusHalted || !strings.Contains(st.Error.Message, "recreated") {
			t.Fatalf("%s after the stream came back: %s %+v", held.id, st.Status, st.Error)
		}
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.>"); len(orders) != 0 {
		t.Fatalf("%d orders placed", len(orders))
	}
	h.command("global", emergency.ActionResume, "checked")
	after := h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", after, 15*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("after resume: %s", st.Status)
	}
}

func TestAHaltSurvivesTheFollowerReconnecting(t *testing.T) {
	h := newHarness(t)
	w, _ := h.startWorkerObj("w1", func(c *worker.Config) { c.EmergencyStaleness = 300 * time.Millisecond })
	h.deploy(quickWorkflow)
	h.command("bot.b1", emergency.ActionHalt, "standing halt")
	h.srv.Restart(t)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !w.Ready() {
			return errors.New("worker not ready again")
		}
		return nil
	})
	halted := h.submit(&contract.Request{WorkflowID: "quick", BotID: "b1"})
	if st := h.waitStatus("quick", halted, 15*time.Second); st.Status != contract.StatusHalted {
		t.Fatalf("bot b1 after the restart: %s", st.Status)
	}
	other := h.submit(&contract.Request{WorkflowID: "quick", BotID: "b2"})
	if st := h.waitStatus("quick", other, 15*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("bot b2 after the restart: %s", st.Status)
	}
}

func TestReplayedOrderNodeOrdersOnce(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(tradeWorkflow)
	inputs := map[string]any{"symbol": "ETHUSDT", "side": "buy", "qty": 1, "price": 3000}
	id := h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1", RequestID: "replay-1", Inputs: inputs})
	if st := h.waitStatus("trade", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("first run: %s", st.Status)
	}

	// Simulate a crash after the order was published but before its checkpoint and
	// the terminal status, then the redelivery of the request.
	h.redeliverAfterCrash(&contract.Request{WorkflowID: "trade", BotID: "b1", RequestID: "replay-1", Inputs: inputs}, "buy")
	store := h.store()
	natstest.WaitFor(t, 10*time.Second, func() error {
		st, _, err := store.Status(h.ctx, "trade", id)
		if err != nil || st.Status != contract.StatusCompleted {
			return fmt.Errorf("status %+v %v", st, err)
		}
		return nil
	})
	evs := h.events("trade", id)
	var resumed bool
	var completions []contract.Event
	for _, ev := range evs {
		if ev.Type == contract.ExecutionStarted && ev.Resumed {
			resumed = true
		}
		if ev.Type == contract.NodeCompleted && ev.NodeID == "buy" {
			completions = append(completions, ev)
		}
	}
	if !resumed || len(completions) != 2 || completions[1].Outputs["duplicate"] != true {
		t.Fatalf("resumed %v, buy completions %+v", resumed, completions)
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.b1"); len(orders) != 1 {
		t.Fatalf("%d order intents for one order node, want 1", len(orders))
	}
	mark, err := h.stateKV().Get(h.ctx, contract.OrderMarkKey("trade", id, "buy"))
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.ValidateJSON(schemas.OrderMark, mark.Value()); err != nil || !strings.Contains(string(mark.Value()), `"placed"`) {
		t.Errorf("order mark %s: %v", mark.Value(), err)
	}
}

func TestAnOrderLeftHalfPlacedLongAgoIsRefusedNotRepeated(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) { c.Provision.DuplicateWindow = time.Minute })
	h.deploy(tradeWorkflow)
	// A worker died between writing the mark and publishing, an hour ago.
	mark, _ := json.Marshal(contract.OrderMark{ClientOrderID: "half.buy", State: contract.OrderPublishing, At: time.Now().Add(-time.Hour)})
	if _, err := h.stateKV().Put(h.ctx, contract.OrderMarkKey("trade", "half", "buy"), mark); err != nil {
		t.Fatal(err)
	}
	h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1", RequestID: "half", Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 1, "price": 1}})
	st := h.waitStatus("trade", "half", 10*time.Second)
	if st.Status != contract.StatusFailed || st.Error.Kind != worker.KindOrderUnknown || !strings.Contains(st.Error.Message, "half.buy") {
		t.Fatalf("status %s %+v", st.Status, st.Error)
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.>"); len(orders) != 0 {
		t.Errorf("%d order intents published for an order in doubt", len(orders))
	}
}

// A risk_update node replayed after a crash adds its PnL once: each update carries
// the id <execution_id>.<node_id>, and the metrics remember the last ones applied.
func TestReplayedRiskUpdateAddsItsPnLOnce(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(`{"id": "book", "nodes": [
	  {"id": "fill", "type": "risk_update", "config": {"pnl": "inputs.pnl"}}]}`)
	req := contract.Request{WorkflowID: "book", BotID: "b1", RequestID: "fill-1", Inputs: map[string]any{"pnl": -100}}
	id := h.submit(&req)
	if st := h.waitStatus("book", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("first run: %s %+v", st.Status, st.Error)
	}
	// Crash before the node's checkpoint: the node runs again on redelivery.
	h.redeliverAfterCrash(&req, "fill")
	natstest.WaitFor(t, 10*time.Second, func() error {
		if n := len(nodeCompletions(h.events("book", id), "fill")); n != 2 {
			return fmt.Errorf("fill completed %d times, want 2", n)
		}
		return nil
	})
	state, err := h.client.Risk(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m := state.Metrics["b1"]; m == nil || m.DailyPnL != -100 {
		t.Fatalf("metrics %+v, want a daily PnL of -100 after the replay", m)
	}

	// The publisher's reports are deduplicated when they carry an id, only then.
	loss := -50.0
	for range 2 {
		if _, err := h.client.ReportMetrics(h.ctx, "b1", contract.RiskUpdate{ID: "report-1", PnL: &loss}, risk.TradingDay{}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := h.client.ReportMetrics(h.ctx, "b1", contract.RiskUpdate{PnL: &loss}, risk.TradingDay{})
	if err != nil || m.DailyPnL != -200 {
		t.Fatalf("metrics %+v, %v; want a daily PnL of -200", m, err)
	}
}

func nodeCompletions(evs []contract.Event, nodeID string) []contract.Event {
	var out []contract.Event
	for _, ev := range evs {
		if ev.Type == contract.NodeCompleted && ev.NodeID == nodeID {
			out = append(out, ev)
		}
	}
	return out
}

// Risk limits of a workflow scope would never be checked: the publisher refuses
// them, and a worker ignores them in KV, saying so.
func TestRiskLimitsOfAWorkflowScopeAreRefused(t *testing.T) {
	h := newHarness(t)
	logs := &lockedBuffer{}
	h.startWorkerLogging("w1", nil, zerolog.New(logs))
	err := h.client.SetLimit(h.ctx, "workflow.trade", contract.RiskLimit{ID: "size", Type: contract.LimitPositionSize, Threshold: 1})
	if err == nil || !strings.Contains(err.Error(), "bot.<id> or strategy.<id>") {
		t.Errorf("SetLimit of workflow.trade: %v", err)
	}
	kv, err := h.js.KeyValue(h.ctx, contract.BucketRisk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(h.ctx, contract.RiskLimitsKey("workflow.trade"), []byte(`{"limits": [{"id": "size", "type": "position_size", "threshold": 1}]}`)); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if out := logs.String(); !strings.Contains(out, `"level":"error"`) || !strings.Contains(out, "limits.workflow.trade") || !strings.Contains(out, "would never be checked") {
			return fmt.Errorf("no error logged about limits.workflow.trade: %s", out)
		}
		return nil
	})
}

// A recreated emergency stream has lost its halts: every worker counts it as a
// global halt until a global resume is stored, so that none runs anything in the
// window between `emergency init` creating the stream and storing its halt, nor
// on a stream someone recreated by hand. The window is held open here: the
// stream exists, empty, while a worker starts.
func TestEmergencyInitRacingAStartingWorkerRunsNothing(t *testing.T) {
	for _, how := range []string{"emergency init", "by hand"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t)
			stop := h.startWorker("w1", nil)
			h.deploy(quickWorkflow)
			stop()
			if err := h.js.DeleteStream(h.ctx, contract.StreamEmergency); err != nil {
				t.Fatal(err)
			}
			waiting := h.submit(&contract.Request{WorkflowID: "quick", BotID: "b1"})
			if how == "emergency init" {
				// The first half of InitEmergency: the halt is not stored yet.
				if err := provision.CreateEmergency(h.ctx, h.js, provision.Config{}); err != nil {
					t.Fatal(err)
				}
			} else {
				pc := provision.Config{}
				if err := pc.Validate(); err != nil {
					t.Fatal(err)
				}
				if _, err := h.js.CreateStream(h.ctx, provision.Streams(pc)[0]); err != nil {
					t.Fatal(err)
				}
			}
			h.startWorker("w2", nil)
			st := h.waitStatus("quick", waiting, 15*time.Second)
			if st.Status != contract.StatusHalted || st.Error == nil || !strings.Contains(st.Error.Message, "recreated") {
				t.Fatalf("request on the empty recreated stream: %s %+v", st.Status, st.Error)
			}
			// The publisher's status shows the state the workers enforce.
			if board, err := h.client.Board(h.ctx); err != nil || board.Get("global").State != emergency.Halted {
				t.Fatalf("board of the empty recreated stream: %+v %v", board.Get("global"), err)
			}
			// A halt of another scope does not lift it; only a global resume does.
			h.command("bot.b9", emergency.ActionHalt, "unrelated")
			again := h.submit(&contract.Request{WorkflowID: "quick", BotID: "b1"})
			if st := h.waitStatus("quick", again, 15*time.Second); st.Status != contract.StatusHalted {
				t.Fatalf("after a halt of bot.b9: %s", st.Status)
			}
			h.command("global", emergency.ActionResume, "checked")
			after := h.submit(&contract.Request{WorkflowID: "quick", BotID: "b1"})
			if st := h.waitStatus("quick", after, 15*time.Second); st.Status != contract.StatusCompleted {
				t.Fatalf("after the resume: %s %+v", st.Status, st.Error)
			}
		})
	}
}

// 64 orders of one bot at once, on two workers, where its position limit allows
// 10: each reserves its exposure before it is published, so at most 10 intents
// are stored, however the orders race.
func TestConcurrentOrdersOfOneBotNeverPassALimitTogether(t *testing.T) {
	h := newHarness(t)
	// Limits from the workers' configuration apply from their start.
	limit := contract.RiskLimit{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 10}
	for _, id := range []string{"w1", "w2"} {
		h.startWorker(id, func(c *worker.Config) {
			c.Consumer.Concurrency = 32
			c.RiskLimits = map[string][]contract.RiskLimit{"bot.b1": {limit}}
		})
	}
	h.deploy(tradeWorkflow)
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = h.submit(&contract.Request{WorkflowID: "trade", BotID: "b1",
			Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 1, "price": 65000}})
	}
	completed := 0
	for _, id := range ids {
		st := h.waitStatus("trade", id, 60*time.Second)
		switch {
		case st.Status == contract.StatusCompleted:
			completed++
		case st.Error == nil || st.Error.Kind != worker.KindRiskLimit:
			t.Errorf("%s: %s %+v, want completed or refused by the risk limit", id, st.Status, st.Error)
		}
	}
	orders := len(h.messages(contract.StreamOrders, "flow.orders.b1"))
	if orders > 10 || orders != completed {
		t.Fatalf("%d intents stored, %d executions completed; want at most 10, one per completed execution", orders, completed)
	}
	if orders == 0 {
		t.Fatal("no order went through")
	}
}
