package executor

import (
	"time"

	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/workflow"
)

// Plan is a compiled workflow, ready to run many times concurrently.
type Plan struct {
	Def *workflow.Definition
	// Version is the KV revision of a deployed definition, 0 for an inline one.
	Version uint64
	nodes   []*planNode
}

type planNode struct {
	def        workflow.Node
	runner     nodes.Runner
	deps       []int // indexes of the nodes this one depends on
	dependents []int
	ancestors  []int // every node before this one, transitively
	// timeout is the node's own, 0 for the executor's default.
	timeout time.Duration
	// provider is set for nodes that call a provider: they run through the
	// resilience chain.
	provider nodes.Provider
	// pure is set for nodes that only compute (nodes.Pure): their checkpoints
	// are kept back until a node that is not pure starts.
	pure  bool
	retry resilience.RetrySettings // the node's overrides; zero fields keep the defaults
}

// NewPlan builds a plan from a checked definition and its compiled runners
// (nodes.Registry.Compile).
func NewPlan(def *workflow.Definition, version uint64, runners map[string]nodes.Runner) *Plan {
	index := make(map[string]int, len(def.Nodes))
	for i, n := range def.Nodes {
		index[n.ID] = i
	}
	p := &Plan{Def: def, Version: version, nodes: make([]*planNode, len(def.Nodes))}
	for i, n := range def.Nodes {
		pn := &planNode{def: n, runner: runners[n.ID], timeout: time.Duration(n.Timeout)}
		pn.provider, _ = pn.runner.(nodes.Provider)
		_, pn.pure = pn.runner.(nodes.Pure)
		if r := n.Retry; r != nil {
			pn.retry = resilience.RetrySettings{MaxAttempts: r.MaxAttempts, MinWait: time.Duration(r.MinWait), MaxWait: time.Duration(r.MaxWait), Multiplier: r.Multiplier}
		}
		for _, d := range n.DependsOn {
			pn.deps = append(pn.deps, index[d])
		}
		p.nodes[i] = pn
	}
	for i, pn := range p.nodes {
		for _, d := range pn.deps {
			p.nodes[d].dependents = append(p.nodes[d].dependents, i)
		}
	}
	for i, pn := range p.nodes {
		seen := make(map[int]bool)
		var walk func(j int)
		walk = func(j int) {
			for _, d := range p.nodes[j].deps {
				if !seen[d] {
					seen[d] = true
					walk(d)
				}
			}
		}
		walk(i)
		for j := range p.nodes {
			if seen[j] {
				pn.ancestors = append(pn.ancestors, j)
			}
		}
	}
	return p
}
