package nodes

import (
	"context"
	"fmt"
	"time"

	"github.com/flowguard/flowguard/internal/workflow"
)

// Delay waits, then completes; it stops early, failing, when its context ends:
//
//	{"type": "delay", "config": {"duration": "2s"}}
type Delay struct{}

type delayConfig struct {
	Duration workflow.Duration `json:"duration"`
}

type delayRunner struct{ d time.Duration }

// Compile implements Type.
func (Delay) Compile(n workflow.Node) (Runner, error) {
	var cfg delayConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("config.duration must be a positive duration such as \"500ms\"")
	}
	return delayRunner{d: time.Duration(cfg.Duration)}, nil
}

func (r delayRunner) Run(ctx context.Context, _ Input) (Result, error) {
	t := time.NewTimer(r.d)
	defer t.Stop()
	select {
	case <-t.C:
		return Result{Outputs: map[string]any{"waited_ms": r.d.Milliseconds()}}, nil
	case <-ctx.Done():
		return Result{}, context.Cause(ctx)
	}
}
