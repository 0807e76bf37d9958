// Package workflow parses workflow definitions and checks their structure: ids,
// dependencies and cycles. Node configurations are checked by their node types
// (package nodes).
package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flowguard/flowguard/schemas"
)

// Defaults of a definition.
const (
	DefaultTimeout     = 5 * time.Minute
	DefaultNodeTimeout = 30 * time.Second
)

// ErrInvalid is matched by every error that Parse returns for a bad definition.
var ErrInvalid = errors.New("invalid workflow")

// Definition is a workflow: a DAG of nodes.
type Definition struct {
	ID          string   `json:"id"`
	Description string   `json:"description,omitempty"`
	Timeout     Duration `json:"timeout,omitzero"`
	Nodes       []Node   `json:"nodes"`
}

// Node is one step of a workflow.
type Node struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	DependsOn       []string        `json:"depends_on,omitempty"`
	Config          json.RawMessage `json:"config,omitempty"`
	Provider        string          `json:"provider,omitempty"`
	Timeout         Duration        `json:"timeout,omitzero"`
	Retry           *Retry          `json:"retry,omitempty"`
	ContinueOnError bool            `json:"continue_on_error,omitempty"`
	// Weight is what each attempt of a provider node draws from its provider's
	// budgets; 0 means 1.
	Weight int64 `json:"weight,omitempty"`
	// Budgets names the provider's budgets the node draws from; none means all.
	Budgets []string `json:"budgets,omitempty"`
}

// WeightOrDefault is the node's weight, 1 when unset.
func (n *Node) WeightOrDefault() int64 { return max(n.Weight, 1) }

// Retry overrides the worker's retry profile for one node.
type Retry struct {
	MaxAttempts int      `json:"max_attempts,omitempty"`
	MinWait     Duration `json:"min_wait,omitzero"`
	MaxWait     Duration `json:"max_wait,omitzero"`
	Multiplier  float64  `json:"multiplier,omitempty"`
}

// TimeoutOrDefault is the workflow timeout, or DefaultTimeout when unset.
func (d *Definition) TimeoutOrDefault() time.Duration {
	if d.Timeout > 0 {
		return time.Duration(d.Timeout)
	}
	return DefaultTimeout
}

// Duration is a time.Duration written in JSON as a Go duration string ("30s").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "500ms" or "2m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

// Parse decodes a definition, checks it against the workflow schema and checks its
// structure. Errors match ErrInvalid and name the node at fault.
func Parse(data []byte) (*Definition, error) {
	if err := schemas.ValidateJSON(schemas.Workflow, data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var def Definition
	if err := json.Unmarshal(data, &def); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := def.Check(); err != nil {
		return nil, err
	}
	return &def, nil
}

// Check verifies ids, dependencies and the absence of cycles.
func (d *Definition) Check() error {
	index := make(map[string]int, len(d.Nodes))
	for i, n := range d.Nodes {
		if n.ID == "" {
			return fmt.Errorf("%w: node #%d has no id; give every node a unique id", ErrInvalid, i+1)
		}
		if _, dup := index[n.ID]; dup {
			return fmt.Errorf("%w: node %q: duplicate id; node ids must be unique", ErrInvalid, n.ID)
		}
		index[n.ID] = i
	}
	for _, n := range d.Nodes {
		if r := n.Retry; r != nil && r.MinWait > 0 && r.MaxWait > 0 && r.MinWait > r.MaxWait {
			return fmt.Errorf("%w: node %q: retry.min_wait (%s) is longer than retry.max_wait (%s); the first wait is the shortest",
				ErrInvalid, n.ID, time.Duration(r.MinWait), time.Duration(r.MaxWait))
		}
		if err := n.checkRateLimit(); err != nil {
			return err
		}
		seen := make(map[string]bool, len(n.DependsOn))
		for _, dep := range n.DependsOn {
			if _, ok := index[dep]; !ok {
				return fmt.Errorf("%w: node %q: depends on unknown node %q", ErrInvalid, n.ID, dep)
			}
			if seen[dep] {
				return fmt.Errorf("%w: node %q: lists dependency %q twice", ErrInvalid, n.ID, dep)
			}
			seen[dep] = true
		}
	}
	if cycle := d.findCycle(index); cycle != nil {
		return fmt.Errorf("%w: node %q: dependency cycle %s; a workflow must be acyclic",
			ErrInvalid, cycle[0], strings.Join(cycle, " -> "))
	}
	return nil
}

// findCycle returns the nodes of one dependency cycle, first node repeated at the end.
func (d *Definition) findCycle(index map[string]int) []string {
	const (
		unvisited = iota
		visiting
		done
	)
	state := make([]int, len(d.Nodes))
	var path []string
	var visit func(i int) []string
	visit = func(i int) []string {
		state[i] = visiting
		path = append(path, d.Nodes[i].ID)
		for _, dep := range d.Nodes[i].DependsOn {
			j := index[dep]
			switch state[j] {
			case visiting:
				for k, id := range path {
					if id == dep {
						return append(append([]string{}, path[k:]...), dep)
					}
				}
			case unvisited:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		state[i] = done
		return nil
	}
	for i := range d.Nodes {
		if state[i] == unvisited {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// checkRateLimit checks a node's weight and budget names.
func (n *Node) checkRateLimit() error {
	if n.Weight < 0 {
		return fmt.Errorf("%w: node %q: weight %d must be at least 1 (the default)", ErrInvalid, n.ID, n.Weight)
	}
	seen := make(map[string]bool, len(n.Budgets))
	for _, b := range n.Budgets {
		if !validBudgetName(b) {
			return fmt.Errorf("%w: node %q: budget %q must be 1 to 64 of A-Z a-z 0-9 _ -", ErrInvalid, n.ID, b)
		}
		if seen[b] {
			return fmt.Errorf("%w: node %q: lists budget %q twice", ErrInvalid, n.ID, b)
		}
		seen[b] = true
	}
	return nil
}

func validBudgetName(s string) bool {
	valid := len(s) >= 1 && len(s) <= 64
	for i := 0; valid && i < len(s); i++ {
		c := s[i]
		valid = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	return valid
}
