package nodes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/workflow"
)

func compileOne(t *testing.T, typ, config string) (Runner, error) {
	t.Helper()
	def := &workflow.Definition{ID: "w", Nodes: []workflow.Node{{ID: "n1", Type: typ, Config: []byte(config)}}}
	runners, err := NewRegistry().Compile(def)
	if err != nil {
		return nil, err
	}
	return runners["n1"], nil
}

func TestCompileRejectsBadConfigNamingTheNode(t *testing.T) {
	cases := []struct {
		name, typ, config, want string
	}{
		{"unknown type", "teleport", `{}`, "unknown node type"},
		{"transform without outputs", "transform", `{}`, "config.outputs"},
		{"transform syntax error", "transform", `{"outputs":{"x":"1 +"}}`, "config.outputs.x"},
		{"transform unknown variable", "transform", `{"outputs":{"x":"secret_env.KEY"}}`, "secret_env"},
		{"unknown config field", "transform", `{"outputs":{"x":"1"},"extra":1}`, "extra"},
		{"condition without expression", "condition", `{}`, "empty expression"},
		{"condition not boolean", "condition", `{"expression":"1 + 2"}`, "config.expression"},
		{"delay without duration", "delay", `{}`, "config.duration"},
		{"delay bad duration", "delay", `{"duration":"soon"}`, "config"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileOne(t, tc.typ, tc.config)
			if !errors.Is(err, workflow.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), `node "n1"`) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q should name node n1 and mention %q", err, tc.want)
			}
		})
	}
}

func TestTransformSeesInputsAndEarlierNodes(t *testing.T) {
	r, err := compileOne(t, "transform", `{"outputs":{"total":"inputs.qty * nodes.price.value","who":"execution.bot_id"}}`)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(context.Background(), Input{Env: &Env{
		Inputs:    map[string]any{"qty": 2.0},
		Nodes:     map[string]map[string]any{"price": {"value": 10.5}},
		Execution: Execution{BotID: "b1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outputs["total"] != 21.0 || res.Outputs["who"] != "b1" {
		t.Errorf("outputs = %v", res.Outputs)
	}
}

func TestTransformRuntimeErrorIsPermanentExpressionError(t *testing.T) {
	r, err := compileOne(t, "transform", `{"outputs":{"x":"inputs.missing.deeper + 1"}}`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Run(context.Background(), Input{Env: &Env{Inputs: map[string]any{}}})
	if err == nil || KindOf(err) != KindExpression || IsTransient(err) {
		t.Errorf("err = %v (kind %s), want a permanent expression error", err, KindOf(err))
	}
}

func TestConditionFalseSkipsDependents(t *testing.T) {
	r, err := compileOne(t, "condition", `{"expression":"inputs.x > 1"}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		x    float64
		skip bool
	}{{2, false}, {0, true}} {
		res, err := r.Run(context.Background(), Input{Env: &Env{Inputs: map[string]any{"x": tc.x}}})
		if err != nil {
			t.Fatal(err)
		}
		if (res.Skip != "") != tc.skip || res.Outputs["result"] != !tc.skip {
			t.Errorf("x=%v: result %+v", tc.x, res)
		}
	}
}

func TestDelayStopsWhenCanceled(t *testing.T) {
	r, err := compileOne(t, "delay", `{"duration":"1h"}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("halted")
	done := make(chan error)
	go func() {
		_, err := r.Run(ctx, Input{})
		done <- err
	}()
	cancel(cause)
	select {
	case err := <-done:
		if !errors.Is(err, cause) {
			t.Errorf("err = %v, want the cancellation cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("delay did not stop on cancel")
	}
}
