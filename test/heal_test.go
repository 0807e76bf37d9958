package test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
)

func TestWorkerRebindsWhenItsConsumerIsDeleted(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(quickWorkflow)
	before := h.submit(&contract.Request{WorkflowID: "quick"})
	h.waitStatus("quick", before, 10*time.Second)

	if err := h.js.DeleteConsumer(h.ctx, contract.StreamExec, consumer.DefaultDurable); err != nil {
		t.Fatal(err)
	}
	after := h.submit(&contract.Request{WorkflowID: "quick"})
	if st := h.waitStatus("quick", after, 20*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("after the consumer was deleted: %s", st.Status)
	}
	if _, err := h.js.Consumer(h.ctx, contract.StreamExec, consumer.DefaultDurable); err != nil {
		t.Errorf("the worker did not recreate its consumer: %v", err)
	}
}

func TestRequestIDIsNotRunAgainAfterTheDuplicateWindow(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(quickWorkflow)
	req := contract.Request{WorkflowID: "quick", RequestID: "once-only"}
	id := h.submit(&req)
	first := h.waitStatus("quick", id, 10*time.Second)
	eventsBefore := len(h.events("quick", id))

	// Published without Nats-Msg-Id, the stream stores it again, as it would once the
	// duplicate window has passed; the execution's state still says it ran.
	data, _ := json.Marshal(req)
	h.publishRaw("flow.exec.quick._", data, nil)
	h.waitAllAcked(10 * time.Second)
	st, err := h.client.Status(h.ctx, "quick", id)
	if err != nil || st.Attempt != first.Attempt || !st.FinishedAt.Equal(*first.FinishedAt) {
		t.Errorf("status changed: %+v -> %+v (%v)", first, st, err)
	}
	if n := len(h.events("quick", id)); n != eventsBefore {
		t.Errorf("%d events after the republish, %d before: it ran again", n, eventsBefore)
	}
}

func TestADuplicateOfARunningRequestIsNotRunTwice(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.startWorker("w2", nil)
	h.deploy(`{"id": "slow-order", "nodes": [
	  {"id": "wait", "type": "delay", "config": {"duration": "1s"}},
	  {"id": "buy", "type": "order", "depends_on": ["wait"], "config": {"symbol": "'BTCUSDT'", "side": "'buy'", "quantity": "1"}}
	]}`)
	req := contract.Request{WorkflowID: "slow-order", BotID: "b1", RequestID: "dup-1"}
	h.submit(&req)
	h.waitEvent("slow-order", "dup-1", contract.NodeStarted, "wait", 10*time.Second)
	// The same request id again, as a second message (after the duplicate window,
	// or from a client that sets no Nats-Msg-Id), while the first still runs.
	data, _ := json.Marshal(req)
	h.publishRaw("flow.exec.slow-order.b1", data, nil)

	if st := h.waitStatus("slow-order", "dup-1", 15*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("status %s", st.Status)
	}
	h.waitAllAcked(10 * time.Second)
	started := 0
	for _, ev := range h.events("slow-order", "dup-1") {
		if ev.Type == contract.ExecutionStarted {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d execution_started events, want 1", started)
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.b1"); len(orders) != 1 {
		t.Errorf("%d order intents, want 1", len(orders))
	}
}
