package nodes

import (
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// Expression is a compiled expr-lang expression over an Env.
type Expression struct {
	source  string
	program *vm.Program
}

// CompileExpression compiles source against Env: it may read inputs, nodes and execution.
func CompileExpression(source string, opts ...expr.Option) (*Expression, error) {
	return compileIn(Env{}, source, opts...)
}

// compileIn compiles source against the variables of env, a struct value.
func compileIn(env any, source string, opts ...expr.Option) (*Expression, error) {
	if source == "" {
		return nil, fmt.Errorf("empty expression")
	}
	p, err := expr.Compile(source, append([]expr.Option{expr.Env(env)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %v", source, err)
	}
	return &Expression{source: source, program: p}, nil
}

// Eval evaluates the expression.
func (e *Expression) Eval(env *Env) (any, error) { return e.eval(env) }

func (e *Expression) eval(env any) (any, error) {
	v, err := expr.Run(e.program, env)
	if err != nil {
		return nil, Permanent(KindExpression, fmt.Errorf("expression %q: %v", e.source, err))
	}
	return v, nil
}
