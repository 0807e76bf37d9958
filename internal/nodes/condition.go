package nodes

import (
	"context"
	"fmt"

	"github.com/expr-lang/expr"

	"github.com/flowguard/flowguard/internal/workflow"
)

// Condition evaluates a boolean expression; when it is false, the nodes that depend
// on it are skipped:
//
//	{"type": "condition", "config": {"expression": "nodes.quote.spread < 0.5"}}
type Condition struct{}

type conditionConfig struct {
	Expression string `json:"expression"`
}

type conditionRunner struct{ expr *Expression }

// Compile implements Type.
func (Condition) Compile(n workflow.Node) (Runner, error) {
	var cfg conditionConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	e, err := CompileExpression(cfg.Expression, expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("config.expression: %v", err)
	}
	return &conditionRunner{expr: e}, nil
}

// Pure implements Pure: the node only evaluates expressions.
func (r *conditionRunner) Pure() {}

func (r *conditionRunner) Run(_ context.Context, in Input) (Result, error) {
	v, err := r.expr.Eval(in.Env)
	if err != nil {
		return Result{}, err
	}
	passed, _ := v.(bool)
	res := Result{Outputs: map[string]any{"result": passed}}
	if !passed {
		res.Skip = fmt.Sprintf("condition %s is false", r.expr.source)
	}
	return res, nil
}
