// Package nodes holds the node types a workflow can use. A node type is one file:
// a Type that checks a node's config and compiles it into a Runner. Types are
// registered by name in a Registry, which the worker and the publisher build.
package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/workflow"
)

// Input is what a node sees when it runs.
type Input struct {
	// Env holds the request inputs, the outputs of the nodes before this one and
	// the execution's identity; expressions evaluate against it.
	Env *Env
	// Attempt counts from 1.
	Attempt int
	// Marks holds the execution's order marks, written under its owner's claim;
	// nil where no execution owns the run (tests, the publisher's dry runs).
	Marks OrderMarks
}

// OrderMarks reads and writes the marks of an execution's order nodes; every
// write is fenced by the execution's claim (execution.Owner).
type OrderMarks interface {
	// OrderMark returns a node's mark, or found false when it has none.
	OrderMark(ctx context.Context, nodeID string) (m *contract.OrderMark, found bool, err error)
	// PutOrderMark stores a node's mark and waits until it is stored.
	PutOrderMark(ctx context.Context, nodeID string, m *contract.OrderMark) error
}

// Env is the environment of expressions.
type Env struct {
	Inputs    map[string]any            `expr:"inputs"`
	Nodes     map[string]map[string]any `expr:"nodes"`
	Execution Execution                 `expr:"execution"`
}

// Execution identifies the running execution.
type Execution struct {
	ID            string `expr:"id"`
	WorkflowID    string `expr:"workflow_id"`
	BotID         string `expr:"bot_id"`
	StrategyID    string `expr:"strategy_id"`
	CorrelationID string `expr:"correlation_id"`
	Traceparent   string `expr:"traceparent"`
}

// Result is what a node produced.
type Result struct {
	Outputs map[string]any
	// Skip, when not empty, skips every node that depends on this one, for this reason.
	Skip string
}

// Runner runs one compiled node. It must return promptly once ctx is done.
type Runner interface {
	Run(ctx context.Context, in Input) (Result, error)
}

// Type checks a node's definition and compiles it. Compile must not do I/O.
type Type interface {
	Compile(node workflow.Node) (Runner, error)
}

// Names of the node types that need the worker's services.
const (
	TypeHTTP        = "http"
	TypeNATSRequest = "nats_request"
	TypeOrder       = "order"
	TypeRiskUpdate  = "risk_update"
)

// ErrUnknownType is returned for a node whose type is not registered.
var ErrUnknownType = errors.New("unknown node type")

// Registry maps type names to Types.
type Registry struct{ types map[string]Type }

// NewRegistry returns a registry of every built-in type. Types that need the
// worker's services (http, nats_request, order, risk_update) are registered
// without them: enough to validate definitions; the worker registers them again
// with their services.
func NewRegistry() *Registry {
	r := &Registry{types: map[string]Type{}}
	r.Register("transform", Transform{})
	r.Register("condition", Condition{})
	r.Register("delay", Delay{})
	r.Register(TypeHTTP, HTTP{})
	r.Register(TypeNATSRequest, NATSRequest{})
	r.Register(TypeOrder, Order{})
	r.Register(TypeRiskUpdate, RiskUpdate{})
	return r
}

// Register adds or replaces a type.
func (r *Registry) Register(name string, t Type) { r.types[name] = t }

// Names lists the registered types, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Compile compiles every node of a structurally valid definition. Errors match
// workflow.ErrInvalid and name the node.
func (r *Registry) Compile(def *workflow.Definition) (map[string]Runner, error) {
	runners := make(map[string]Runner, len(def.Nodes))
	for _, n := range def.Nodes {
		t, ok := r.types[n.Type]
		if !ok {
			return nil, fmt.Errorf("%w: node %q: %w %q; known types: %s",
				workflow.ErrInvalid, n.ID, ErrUnknownType, n.Type, strings.Join(r.Names(), ", "))
		}
		run, err := t.Compile(n)
		if err != nil {
			return nil, fmt.Errorf("%w: node %q (%s): %v", workflow.ErrInvalid, n.ID, n.Type, err)
		}
		if _, ok := run.(Provider); !ok && (n.Provider != "" || n.Retry != nil || n.Weight != 0 || len(n.Budgets) > 0) {
			return nil, fmt.Errorf("%w: node %q (%s): provider, retry, weight and budgets apply to provider nodes only (%s, %s, %s); remove them or use a provider node",
				workflow.ErrInvalid, n.ID, n.Type, TypeHTTP, TypeNATSRequest, TypeOrder)
		}
		runners[n.ID] = run
	}
	return runners, nil
}

// decodeConfig decodes a node's config strictly: unknown fields are errors.
func decodeConfig(raw json.RawMessage, into any) error {
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("config: %v", err)
	}
	return nil
}

// Pure is implemented by runners that only compute from their Env: no I/O, no
// state, no waiting (transform, condition). Such a node is cheap to run again, so
// its checkpoint is written only once a node that is not pure starts (see
// docs/execution-core.md, "Checkpoints where a resume needs them").
type Pure interface {
	Pure()
}

// Provider is implemented by runners that call an outside service (an exchange, a
// market-data API, a NATS service). Their attempts run under the resilience chain:
// per-attempt timeout, retry of transient errors, and the circuit breaker of the
// named provider, shared by every execution of the worker.
type Provider interface {
	Provider() string
}
