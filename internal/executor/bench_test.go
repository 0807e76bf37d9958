package executor

import (
	"context"
	"fmt"
	"testing"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/workflow"
)

type discard struct{}

func (discard) Emit(contract.Event) error             { return nil }
func (discard) Checkpoint(*contract.Checkpoint) error { return nil }
func (discard) Confirm(context.Context) error         { return nil }
func (discard) Checkpoints(context.Context) (map[string]*contract.Checkpoint, error) {
	return nil, nil
}

// BenchmarkExecutor measures the executor's own cost per node: scheduling, events
// and checkpoints built, with in-memory nodes and no I/O. Chains are sequential,
// fans are parallel.
func BenchmarkExecutor(b *testing.B) {
	for _, shape := range []string{"chain", "fan"} {
		for _, n := range []int{1, 3, 10} {
			b.Run(fmt.Sprintf("%s-%d", shape, n), func(b *testing.B) {
				def := &workflow.Definition{ID: "bench"}
				for i := range n {
					nd := workflow.Node{ID: fmt.Sprintf("n%d", i), Type: "transform", Config: []byte(`{"outputs":{"x":"inputs.n * 2"}}`)}
					if shape == "chain" && i > 0 {
						nd.DependsOn = []string{fmt.Sprintf("n%d", i-1)}
					}
					def.Nodes = append(def.Nodes, nd)
				}
				runners, err := nodes.NewRegistry().Compile(def)
				if err != nil {
					b.Fatal(err)
				}
				p := NewPlan(def, 1, runners)
				e := New(nil, Config{})
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					x := &Execution{ID: "x", WorkflowID: "bench", CorrelationID: "c", Inputs: map[string]any{"n": 2.0}, Plan: p}
					if out := e.Run(ctx, x, discard{}); out.Status != contract.StatusCompleted {
						b.Fatalf("outcome %+v", out)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/node")
			})
		}
	}
}
