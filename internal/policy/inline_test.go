package policy

import (
	"strings"
	"testing"

	"github.com/flowguard/flowguard/internal/workflow"
)

func TestInlineCheck(t *testing.T) {
	def := func(nodes string) *workflow.Definition {
		d, err := workflow.Parse([]byte(`{"id": "wf", "nodes": [` + nodes + `]}`))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	const (
		transform  = `{"id": "t", "type": "transform", "config": {"outputs": {"x": "1"}}}`
		order      = `{"id": "o", "type": "order", "config": {"symbol": "'X'", "side": "'buy'", "quantity": "1"}}`
		httpOrder  = `{"id": "h", "type": "http", "config": {"method": "POST", "url": "https://x.test", "side_effect": "order"}}`
		risk       = `{"id": "r", "type": "risk_update", "config": {"pnl": "1"}}`
		secret     = `{"id": "s", "type": "http", "config": {"url": "https://x.test", "headers": {"X-Key": "${env:API_KEY}"}}}`
		escapedKey = `{"id": "s", "type": "http", "config": {"url": "https://x.test", "headers": {"X-Key": "\u0024{env:API_KEY}"}}}`
	)
	all := Inline{Enabled: true, Order: true, RiskUpdate: true, Secrets: true}
	cases := []struct {
		name   string
		policy Inline
		nodes  string
		want   string // empty: allowed
	}{
		{"off by default", Inline{}, transform, "--inline-workflows"},
		{"plain nodes when on", Inline{Enabled: true}, transform, ""},
		{"order", Inline{Enabled: true}, order, "--inline-allow-order"},
		{"http declaring an order", Inline{Enabled: true}, httpOrder, "--inline-allow-order"},
		{"risk_update", Inline{Enabled: true}, risk, "--inline-allow-risk-update"},
		{"secret", Inline{Enabled: true}, secret, "--inline-allow-secrets"},
		{"secret written with a JSON escape", Inline{Enabled: true}, escapedKey, "--inline-allow-secrets"},
		{"everything allowed", all, strings.Join([]string{order, httpOrder, risk, secret}, ","), ""},
		{"each flag allows only its own", Inline{Enabled: true, Order: true, Secrets: true}, order + "," + risk, "--inline-allow-risk-update"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Check(def(tc.nodes))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "publisher deploy") {
				t.Fatalf("err = %v, want one naming %s and how to deploy instead", err, tc.want)
			}
		})
	}
}
