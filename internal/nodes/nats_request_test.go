package nodes

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/workflow"
)

// quoteService starts a micro service on md.quote that answers with handle.
func quoteService(t *testing.T, nc *nats.Conn, handle func(req micro.Request)) {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{
		Name: "quotes", Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "md.quote", Handler: micro.HandlerFunc(handle)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
}

func natsRegistry(t *testing.T, nc *nats.Conn) *Registry {
	r := NewRegistry()
	r.Register(TypeNATSRequest, NATSRequest{Conn: nc, Secrets: testSecrets(t)})
	r.Register(TypeHTTP, HTTP{Client: http.DefaultClient})
	return r
}

func TestNATSRequestCallsAMicroService(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	quoteService(t, nc, func(req micro.Request) {
		var q struct {
			Symbol string  `json:"symbol"`
			Qty    float64 `json:"qty"`
		}
		if err := json.Unmarshal(req.Data(), &q); err != nil {
			_ = req.Error("400", "bad request", nil)
			return
		}
		_ = req.RespondJSON(map[string]any{"symbol": q.Symbol, "bid": 64990.5, "ask": 64991.0, "qty": q.Qty, "key": req.Headers().Get("X-Key")},
			micro.WithHeaders(micro.Headers{"X-Source": []string{"book"}}))
	})
	reg := natsRegistry(t, nc)

	r := mustCompile(t, reg, TypeNATSRequest, `{"subject": "md.quote", "headers": {"X-Key": "${env:API_KEY}"},
		"body": {"symbol": "${inputs.symbol}", "qty": "${inputs.qty}"},
		"outputs": {"mid": "(body.bid + body.ask) / 2", "symbol": "body.symbol", "qty": "body.qty", "source": "headers['x-source']", "key": "body.key"}}`)
	res, err := run(t, r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"mid": 64990.75, "symbol": "BTCUSDT", "qty": 0.5, "source": "book", "key": Redacted}
	if !reflect.DeepEqual(res.Outputs, want) {
		t.Errorf("outputs %v, want %v", res.Outputs, want)
	}
	if p := r.(Provider).Provider(); p != "md_quote" {
		t.Errorf("provider %q", p)
	}

	// Without config.outputs, the whole reply.
	res, err = run(t, mustCompile(t, reg, TypeNATSRequest, `{"subject": "md.quote", "body": {"symbol": "ETHUSDT"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := res.Outputs["body"].(map[string]any); body["symbol"] != "ETHUSDT" {
		t.Errorf("outputs %v", res.Outputs)
	}
}

func TestNATSRequestFailures(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	var code string
	quoteService(t, nc, func(req micro.Request) { _ = req.Error(code, "quotes unavailable", nil) })
	reg := natsRegistry(t, nc)

	_, err := run(t, mustCompile(t, reg, TypeNATSRequest, `{"subject": "md.nobody.home"}`))
	if KindOf(err) != KindNoResponders || !IsTransient(err) || !strings.Contains(err.Error(), "md.nobody.home") {
		t.Errorf("no responders: %v (kind %s)", err, KindOf(err))
	}
	for _, tc := range []struct {
		code      string
		transient bool
	}{{"503", true}, {"500", true}, {"400", false}, {"404", false}} {
		code = tc.code
		_, err := run(t, mustCompile(t, reg, TypeNATSRequest, `{"subject": "md.quote"}`))
		if KindOf(err) != KindServiceError || IsTransient(err) != tc.transient || !strings.Contains(err.Error(), "quotes unavailable") {
			t.Errorf("service error %s: %v (kind %s, transient %v)", tc.code, err, KindOf(err), IsTransient(err))
		}
	}
	r, err := compileNode(t, reg, workflow.Node{Type: TypeNATSRequest, Provider: "md", Config: []byte(`{"subject": "md.${inputs.symbol + '.*'}"}`)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(t, r)
	if KindOf(err) != KindInvalidCall || IsTransient(err) {
		t.Errorf("wildcard subject at run time: %v", err)
	}
}

// A workflow, which a bot may send inline, runs with the worker's NATS rights: the
// subjects of NATS's APIs and of flowguard itself are refused, written out at
// compile time and rendered at run time.
func TestNATSRequestRefusesReservedSubjects(t *testing.T) {
	for _, tc := range []struct {
		prefix, subject string
		refused         bool
	}{
		{"", "flow.emergency.global", true},
		{"", "flow.orders.b1", true},
		{"", "$JS.API.STREAM.DELETE.FLOW_EMERGENCY", true},
		{"", "$KV.flow_risk.limits.global", true},
		{"", "$SYS.REQ.SERVER.PING", true},
		{"", "$SRV.PING", true},
		{"", "$O.files.chunks", true},
		{"", "_INBOX.abc", true},
		{"", "flow.emergency.${inputs.scope}", true},
		{"", "$KV.${inputs.bucket}.x", true},
		{"desk", "desk.emergency.global", true},
		{"desk", "flow.emergency.global", false},
		{"", "md.quote", false},
		{"", "flowx.quote", false},
		{"", "md.${inputs.symbol}", false},
		{"", "${inputs.subject}", false},
	} {
		reg := NewRegistry()
		reg.Register(TypeNATSRequest, NATSRequest{Prefix: tc.prefix})
		_, err := compileNode(t, reg, workflow.Node{Type: TypeNATSRequest, Provider: "p", Config: []byte(`{"subject": "` + tc.subject + `"}`)})
		refused := err != nil && strings.Contains(err.Error(), "is reserved") && strings.Contains(err.Error(), "worker's credentials")
		if refused != tc.refused || (err != nil && !refused) {
			t.Errorf("prefix %q, subject %s: err %v, want refused %v", tc.prefix, tc.subject, err, tc.refused)
		}
	}

	srv := natstest.Start(t)
	reg := natsRegistry(t, natstest.Connect(t, srv.URL()))
	r, err := compileNode(t, reg, workflow.Node{Type: TypeNATSRequest, Provider: "p", Config: []byte(`{"subject": "${inputs.subject}", "body": {"action": "resume"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"flow.emergency.global", "$KV.flow_state.workflow.w.latest_execution", "$JS.API.STREAM.DELETE.FLOW_EMERGENCY"} {
		env := testEnv()
		env.Inputs["subject"] = subject
		_, err := r.Run(context.Background(), Input{Env: env, Attempt: 1})
		if KindOf(err) != KindInvalidCall || IsTransient(err) || !strings.Contains(err.Error(), "is reserved") {
			t.Errorf("%s at run time: %v (kind %s), want a permanent invalid_call saying it is reserved", subject, err, KindOf(err))
		}
	}
}
