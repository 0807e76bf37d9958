package nodes

import (
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
