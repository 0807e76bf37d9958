package nodes

import (
	"strings"
	"testing"

	"github.com/flowguard/flowguard/internal/workflow"
)

func TestHTTPSideEffectOrderNeedsItsOrder(t *testing.T) {
	reg := NewRegistry()
	for config, want := range map[string]string{
		`{"url": "https://x.test", "side_effect": "trade"}`:                                              `config.side_effect must be "order"`,
		`{"url": "https://x.test", "side_effect": "order"}`:                                              "config.order is required",
		`{"url": "https://x.test", "side_effect": "order", "order": {"symbol": "'X'", "side": "'buy'"}}`: "config.order: config.quantity",
		`{"url": "https://x.test", "order": {"symbol": "'X'", "side": "'buy'", "quantity": "1"}}`:        `config.side_effect must be "order"`,
	} {
		_, err := compileNode(t, reg, workflow.Node{Type: TypeHTTP, Config: []byte(config)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", config, err, want)
		}
	}
	r, err := compileNode(t, reg, workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://x.test", "side_effect": "order",
		"order": {"symbol": "'X'", "side": "'buy'", "quantity": "1", "reference_price": "10"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(Provider); !ok {
		t.Error("a gated http node is no longer a provider node")
	}
}
