package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/worker"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	h := newHarness(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	h.startWorker("w1", func(c *worker.Config) { c.HTTPAddr = addr })
	h.deploy(twoStepWorkflow)
	base := "http://" + addr

	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	id := h.submit(&contract.Request{WorkflowID: "two-step", Inputs: map[string]any{"n": 1}})
	h.waitStatus("two-step", id, 10*time.Second)
	h.publishRaw("flow.exec.two-step._", []byte("not json"), nil)
	h.command("bot.b9", emergency.ActionHalt, "metrics test")

	natstest.WaitFor(t, 10*time.Second, func() error {
		_, body := httpGet(t, base+"/metrics")
		for _, want := range []string{
			`flowguard_executions_total{outcome="completed"} 1`,
			`flowguard_executions_total{outcome="rejected"} 1`,
			`flowguard_requests_dead_lettered_total{kind="invalid_request"} 1`,
			`flowguard_node_duration_seconds_count{node_type="transform",outcome="completed"} 2`,
			`flowguard_execution_duration_seconds_count{outcome="completed"} 1`,
			`flowguard_emergency_state{scope="bot.b9"} 2`,
			`flowguard_executions_in_flight 0`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		return nil
	})

	// Not ready while the emergency state cannot be confirmed.
	if err := h.js.DeleteStream(h.ctx, contract.StreamEmergency); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if code, body := httpGet(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "emergency") {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
}

// collect sends a micro service discovery request and gathers every reply.
func collect(t *testing.T, nc *nats.Conn, subject string, want int) [][]byte {
	t.Helper()
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	deadline := time.After(5 * time.Second)
	for len(out) < want {
		select {
		case m := <-replies:
			out = append(out, m.Data)
		case <-deadline:
			t.Fatalf("%d replies to %s, want %d", len(out), subject, want)
		}
	}
	return out
}

func TestWorkersRegisterAsMicroServices(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) { c.Version = "1.2.3" })
	h.startWorker("w2", func(c *worker.Config) { c.Version = "1.2.3" })
	h.deploy(twoStepWorkflow)
	id := h.submit(&contract.Request{WorkflowID: "two-step", Inputs: map[string]any{"n": 1}})
	h.waitStatus("two-step", id, 10*time.Second)

	ids := map[string]bool{}
	for _, data := range collect(t, h.nc, "$SRV.INFO."+worker.ServiceName, 2) {
		var info micro.Info
		if err := json.Unmarshal(data, &info); err != nil {
			t.Fatal(err)
		}
		if info.Version != "1.2.3" {
			t.Errorf("version %q", info.Version)
		}
		if info.Metadata["contract_version"] != contract.Version {
			t.Errorf("contract_version %q in the service metadata, want %q", info.Metadata["contract_version"], contract.Version)
		}
		ids[info.Metadata["worker_id"]] = true
	}
	if !ids["w1"] || !ids["w2"] {
		t.Errorf("workers listed: %v", ids)
	}
	completed := int64(0)
	for _, data := range collect(t, h.nc, "$SRV.STATS."+worker.ServiceName, 2) {
		var stats struct {
			Endpoints []struct {
				Data struct {
					WorkerID   string `json:"worker_id"`
					Ready      bool   `json:"ready"`
					Executions struct {
						Completed int64 `json:"completed"`
						InFlight  int64 `json:"in_flight"`
					} `json:"executions"`
				} `json:"data"`
			} `json:"endpoints"`
		}
		if err := json.Unmarshal(data, &stats); err != nil {
			t.Fatal(err)
		}
		for _, e := range stats.Endpoints {
			if !e.Data.Ready {
				t.Errorf("%s reports not ready", e.Data.WorkerID)
			}
			completed += e.Data.Executions.Completed
		}
	}
	if completed != 1 {
		t.Errorf("the fleet reports %d completed executions, want 1", completed)
	}
	reply, err := h.nc.Request("flow.workers.w1.status", nil, 2*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), `"worker_id":"w1"`) {
		t.Errorf("status endpoint: %v %s", err, reply.Data)
	}
}

func TestTraceparentReachesEveryEventAndOrder(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(tradeWorkflow)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req := contract.Request{WorkflowID: "trade", BotID: "b1", RequestID: "traced", Inputs: map[string]any{"symbol": "BTCUSDT", "side": "buy", "qty": 0.1, "price": 1}}
	data, _ := json.Marshal(req)
	h.publishRaw("flow.exec.trade.b1", data, nats.Header{"traceparent": []string{tp}})
	if st := h.waitStatus("trade", "traced", 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("status %s %+v", st.Status, st.Error)
	}
	msgs := append(h.messages("FLOW_EVENTS", "flow.events.*.trade.traced.*"), h.messages("FLOW_ORDERS", "flow.orders.b1")...)
	if len(msgs) < 7 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		var body struct {
			Traceparent string `json:"traceparent"`
		}
		_ = json.Unmarshal(m.Data(), &body)
		if m.Headers().Get("traceparent") != tp || body.Traceparent != tp {
			t.Errorf("%s: header %q, field %q", m.Subject(), m.Headers().Get("traceparent"), body.Traceparent)
		}
	}
}
