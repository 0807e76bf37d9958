package test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/worker"
)

// An inline workflow must not drive the control plane with the worker's NATS
// rights: a nats_request to the worker's own subjects (here under the prefix
// desk) is refused, written out or rendered from the inputs.
func TestNATSRequestCannotReachTheWorkersOwnSubjects(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) { c.Prefix, c.Inline.Enabled = "desk", true })
	desk, err := client.New(h.nc, "desk")
	if err != nil {
		t.Fatal(err)
	}
	literal := `{"id": "resume-literal", "nodes": [{"id": "call", "type": "nats_request",
	  "config": {"subject": "desk.emergency.global", "body": {"action": "resume"}}}]}`
	if _, err := desk.Validate([]byte(literal)); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("the publisher accepted a request to desk.emergency.global: %v", err)
	}
	templated := `{"id": "resume-templated", "nodes": [{"id": "call", "type": "nats_request", "provider": "p",
	  "config": {"subject": "${inputs.subject}", "body": {"action": "resume"}}}]}`

	id := h.submitWith(desk, &contract.Request{WorkflowID: "resume-literal", Workflow: []byte(literal)})
	st := h.waitStatus("resume-literal", id, 10*time.Second)
	if st.Error == nil || st.Error.Kind != contract.KindInvalidWorkflow || !strings.Contains(st.Error.Message, "reserved") {
		t.Errorf("inline literal subject: %s %+v, want rejected as invalid_workflow", st.Status, st.Error)
	}
	id = h.submitWith(desk, &contract.Request{WorkflowID: "resume-templated", Workflow: []byte(templated),
		Inputs: map[string]any{"subject": "desk.emergency.global"}})
	st = h.waitStatus("resume-templated", id, 10*time.Second)
	if st.Status != contract.StatusFailed || st.Error.Kind != nodes.KindInvalidCall || !strings.Contains(st.Error.Message, "reserved") {
		t.Errorf("rendered subject: %s %+v, want failed with invalid_call", st.Status, st.Error)
	}
	if cmds := h.messages(contract.StreamEmergency, "desk.emergency.>"); len(cmds) != 0 {
		t.Errorf("a workflow stored %d emergency commands", len(cmds))
	}
}

// submitWith publishes a request with another client (another prefix).
func (h *harness) submitWith(c *client.Client, req *contract.Request) string {
	h.t.Helper()
	id, err := c.Submit(h.ctx, req)
	if err != nil {
		h.t.Fatalf("submit: %v", err)
	}
	return id
}

// Inline workflows are off by default; turned on, an inline definition still may
// not place orders, write risk metrics or read secrets unless each is allowed.
func TestInlineWorkflowsAreOffByDefault(t *testing.T) {
	h := newHarness(t)
	stop := h.startWorker("w1", nil)
	h.deploy(quickWorkflow)

	id := h.submit(&contract.Request{WorkflowID: "quick", Workflow: []byte(quickWorkflow)})
	st := h.waitStatus("quick", id, 10*time.Second)
	if st.Error == nil || st.Error.Kind != contract.KindInvalidRequest || !strings.Contains(st.Error.Message, "inline workflow definitions are disabled on this worker") {
		t.Errorf("inline request: %s %+v, want rejected as invalid_request", st.Status, st.Error)
	}
	h.waitEvent("quick", id, contract.ExecutionRejected, "", 10*time.Second)
	id = h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Errorf("deployed workflow: %s %+v", st.Status, st.Error)
	}
	stop()

	t.Setenv("INLINE_TEST_KEY", "k-123")
	h.startWorker("w2", func(c *worker.Config) {
		c.Inline.Enabled = true
		c.Resilience.SecretEnv = []string{"INLINE_TEST_KEY"}
	})
	cases := []struct{ name, def, flag string }{
		{"order", `{"id": "inl-order", "nodes": [{"id": "buy", "type": "order", "config": {"symbol": "'X'", "side": "'buy'", "quantity": "1"}}]}`, "--inline-allow-order"},
		{"risk_update", `{"id": "inl-risk", "nodes": [{"id": "pnl", "type": "risk_update", "config": {"pnl": "-1e9"}}]}`, "--inline-allow-risk-update"},
		{"secret", `{"id": "inl-secret", "nodes": [{"id": "t", "type": "transform", "config": {"outputs": {"k": "'${env:INLINE_TEST_KEY}'"}}}]}`, "--inline-allow-secrets"},
	}
	for _, tc := range cases {
		var def struct{ ID string }
		_ = json.Unmarshal([]byte(tc.def), &def)
		id := h.submit(&contract.Request{WorkflowID: def.ID, BotID: "b1", Workflow: []byte(tc.def)})
		st := h.waitStatus(def.ID, id, 10*time.Second)
		if st.Error == nil || st.Error.Kind != contract.KindInvalidRequest || !strings.Contains(st.Error.Message, tc.flag) {
			t.Errorf("%s: %s %+v, want rejected as invalid_request naming %s", tc.name, st.Status, st.Error, tc.flag)
		}
	}
	if st, err := h.client.Risk(h.ctx); err != nil || len(st.Metrics) != 0 {
		t.Errorf("an inline workflow wrote metrics: %+v %v", st, err)
	}
	if n := len(h.messages(contract.StreamOrders, "flow.orders.>")); n != 0 {
		t.Errorf("an inline workflow placed %d orders", n)
	}
}

// A bot's credentials cannot run an inline workflow on a worker started with the
// defaults, even one that only computes.
func TestBotCannotRunAnInlineWorkflowByDefault(t *testing.T) {
	srv := rolesServer(t)
	h := harnessOn(t, connectAs(t, srv.URL(), "operator"))
	h.srv = srv
	h.startWorker("w1", asWorker(srv.URL()))
	bot := harnessOn(t, connectAs(t, srv.URL(), "b1"))
	id := bot.submit(&contract.Request{WorkflowID: "quick", BotID: "b1", Workflow: []byte(quickWorkflow)})
	st := h.waitStatus("quick", id, 10*time.Second)
	if st.Error == nil || st.Error.Kind != contract.KindInvalidRequest || !strings.Contains(st.Error.Message, "--inline-workflows") {
		t.Errorf("bot's inline request: %s %+v, want rejected as invalid_request", st.Status, st.Error)
	}
}

// An http node that declares "side_effect": "order" is gated as an order node is:
// a pause, a halt or a risk limit stops it before its call.
func TestHTTPOrderNodesArePausedHaltedAndLimited(t *testing.T) {
	var calls atomic.Int32
	exchange := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Query().Get("refuse") == "true" {
			http.Error(w, `{"msg": "insufficient balance"}`, http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"status": "NEW"}`))
	}))
	defer exchange.Close()
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) {
		c.RiskLimits = map[string][]contract.RiskLimit{"bot.b1": {{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 2}}}
	})
	h.deploy(`{"id": "http-order", "nodes": [{"id": "place", "type": "http", "provider": "exchange", "config": {
	  "method": "POST", "url": "` + exchange.URL + `/order", "query": {"refuse": "${inputs.refuse == true}"}, "idempotent": true, "side_effect": "order",
	  "order": {"symbol": "'BTCUSDT'", "side": "'buy'", "quantity": "inputs.qty", "reference_price": "65000"},
	  "body": {"qty": "${inputs.qty}"}}}]}`)
	run := func(bot string, qty float64) *contract.Status {
		t.Helper()
		id := h.submit(&contract.Request{WorkflowID: "http-order", BotID: bot, Inputs: map[string]any{"qty": qty}})
		return h.waitStatus("http-order", id, 15*time.Second)
	}
	if st := run("b1", 1); st.Status != contract.StatusCompleted || calls.Load() != 1 {
		t.Fatalf("within the limit: %s %+v, %d calls", st.Status, st.Error, calls.Load())
	}
	if st := run("b1", 5); st.Error == nil || st.Error.Kind != worker.KindRiskLimit || calls.Load() != 1 {
		t.Fatalf("over the limit: %s %+v, %d calls", st.Status, st.Error, calls.Load())
	}
	// An order the exchange refuses was not placed: its reservation is released,
	// and the limit's room is there for the next.
	id := h.submit(&contract.Request{WorkflowID: "http-order", BotID: "b1", Inputs: map[string]any{"qty": 1, "refuse": true}})
	if st := h.waitStatus("http-order", id, 15*time.Second); st.Error == nil || st.Error.Kind != nodes.KindHTTPStatus || calls.Load() != 2 {
		t.Fatalf("refused by the exchange: %s %+v, %d calls", st.Status, st.Error, calls.Load())
	}
	if st := run("b1", 1); st.Status != contract.StatusCompleted || calls.Load() != 3 {
		t.Fatalf("within the limit after a refused order: %s %+v, %d calls", st.Status, st.Error, calls.Load())
	}
	h.command("bot.b2", "pause", "reduce only")
	if st := run("b2", 1); st.Error == nil || st.Error.Kind != worker.KindTradingPaused || calls.Load() != 3 {
		t.Fatalf("paused: %s %+v, %d calls", st.Status, st.Error, calls.Load())
	}
	h.command("bot.b2", "halt", "stop")
	if st := run("b2", 1); st.Status != contract.StatusHalted || calls.Load() != 3 {
		t.Fatalf("halted: %s %+v, %d calls", st.Status, st.Error, calls.Load())
	}
}
