// Package policy decides what a worker lets workflows do beyond computing: which
// inline definitions run (inline.go) and which hosts http nodes reach, with which
// secrets (egress.go).
package policy

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/flowguard/flowguard/internal/workflow"
)

// Node types and config fields an inline definition may use only when allowed.
const (
	typeOrder      = "order"
	typeRiskUpdate = "risk_update"
	typeHTTP       = "http"
	secretMarker   = "${env:"
)

// Inline is the policy of workflow definitions sent inline in requests. Its zero
// value refuses them all: an inline definition runs with the worker's NATS rights,
// network reach and secrets, on behalf of whoever may publish a request.
type Inline struct {
	// Enabled runs inline definitions (--inline-workflows).
	Enabled bool
	// Order lets them place orders: order nodes and http nodes declaring
	// "side_effect": "order" (--inline-allow-order).
	Order bool
	// RiskUpdate lets them write their bot's risk metrics (--inline-allow-risk-update).
	RiskUpdate bool
	// Secrets lets them read the worker's shared secrets with ${env:NAME}
	// (--inline-allow-secrets).
	Secrets bool
}

// Validate refuses an allowance that would have no effect.
func (p Inline) Validate() error {
	if !p.Enabled && (p.Order || p.RiskUpdate || p.Secrets) {
		return fmt.Errorf("--inline-allow-order, --inline-allow-risk-update and --inline-allow-secrets apply to inline workflows: add --inline-workflows, or remove them")
	}
	return nil
}

// Check returns nil when def may run inline, else an error that says what it uses
// and which flag would allow it, or how to run it deployed instead.
func (p Inline) Check(def *workflow.Definition) error {
	deploy := fmt.Sprintf("deploy workflow %q (publisher deploy FILE) and send the request without its workflow field", def.ID)
	if !p.Enabled {
		return fmt.Errorf("inline workflow definitions are disabled on this worker (start it with --inline-workflows to allow them): %s", deploy)
	}
	for _, n := range def.Nodes {
		switch {
		case !p.Order && (n.Type == typeOrder || n.Type == typeHTTP && declaresOrder(n.Config)):
			return fmt.Errorf("node %q places an order, which inline workflows may not do on this worker (--inline-allow-order): %s", n.ID, deploy)
		case !p.RiskUpdate && n.Type == typeRiskUpdate:
			return fmt.Errorf("node %q writes risk metrics (risk_update), which inline workflows may not do on this worker (--inline-allow-risk-update): %s", n.ID, deploy)
		case !p.Secrets && readsSecret(n.Config):
			return fmt.Errorf("node %q reads a secret (%s...}), which inline workflows may not do on this worker (--inline-allow-secrets): %s", n.ID, secretMarker, deploy)
		}
	}
	return nil
}

// declaresOrder reports whether an http node's config declares "side_effect": "order".
func declaresOrder(config json.RawMessage) bool {
	var c struct {
		SideEffect string `json:"side_effect"`
	}
	return json.Unmarshal(config, &c) == nil && c.SideEffect == typeOrder
}

// readsSecret reports whether any string of a node's config, key or value, holds
// an ${env:...} placeholder. It errs on the side of refusing: a literal $${env:
// counts too.
func readsSecret(config json.RawMessage) bool {
	if len(config) == 0 {
		return false
	}
	var v any
	if json.Unmarshal(config, &v) != nil {
		return strings.Contains(string(config), "env:") // not JSON: refused elsewhere; be safe
	}
	return holdsSecret(v)
}

func holdsSecret(v any) bool {
	switch t := v.(type) {
	case string:
		return strings.Contains(t, secretMarker)
	case map[string]any:
		for k, e := range t {
			if strings.Contains(k, secretMarker) || holdsSecret(e) {
				return true
			}
		}
	case []any:
		for _, e := range t {
			if holdsSecret(e) {
				return true
			}
		}
	}
	return false
}
