package nodes

import (
	"context"
	"fmt"
	"slices"

	"github.com/flowguard/flowguard/internal/workflow"
)

// Transform computes outputs from expressions:
//
//	{"type": "transform", "config": {"outputs": {"mid": "(inputs.bid + inputs.ask) / 2"}}}
type Transform struct{}

type transformConfig struct {
	Outputs map[string]string `json:"outputs"`
}

type transformRunner struct {
	names []string
	exprs []*Expression
}

// Compile implements Type.
func (Transform) Compile(n workflow.Node) (Runner, error) {
	var cfg transformConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	if len(cfg.Outputs) == 0 {
		return nil, fmt.Errorf("config.outputs must name at least one output, for example {\"outputs\": {\"x\": \"inputs.a * 2\"}}")
	}
	r := &transformRunner{}
	for name := range cfg.Outputs {
		r.names = append(r.names, name)
	}
	slices.Sort(r.names)
	for _, name := range r.names {
		e, err := CompileExpression(cfg.Outputs[name])
		if err != nil {
			return nil, fmt.Errorf("config.outputs.%s: %v", name, err)
		}
		r.exprs = append(r.exprs, e)
	}
	return r, nil
}

// Pure implements Pure: the node only evaluates expressions.
func (r *transformRunner) Pure() {}

func (r *transformRunner) Run(_ context.Context, in Input) (Result, error) {
	out := make(map[string]any, len(r.names))
	for i, e := range r.exprs {
		v, err := e.Eval(in.Env)
		if err != nil {
			return Result{}, err
		}
		out[r.names[i]] = v
	}
	return Result{Outputs: out}, nil
}
