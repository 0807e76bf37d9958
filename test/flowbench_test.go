package test

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/flowguard/flowguard/internal/bench"
)

// TestFlowbenchPeerComparison runs flowbench's comparison briefly: flowguard, the
// Watermill peer (its own module, built with the go command) and the ceiling, each
// as a process against one server; each must run every request exactly once.
func TestFlowbenchPeerComparison(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	dir := t.TempDir()
	flowbench := filepath.Join(dir, "flowbench")
	if out, err := exec.Command("go", "build", "-o", flowbench, "../cmd/flowbench").CombinedOutput(); err != nil {
		t.Fatalf("build flowbench: %v\n%s", err, out)
	}
	watermill := filepath.Join(dir, "watermill-peer")
	build := exec.Command("go", "build", "-o", watermill, ".")
	build.Dir = "../bench/watermill"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the Watermill peer: %v\n%s", err, out)
	}
	url := h.srv.URL()
	const nodes, concurrency = "3", "8"
	cfg := bench.CompareConfig{URL: url, Nodes: 3, InFlight: []int{1, 8}, Requests: 40, Warmup: 10, Systems: []bench.System{
		{Name: "flowguard", Prefix: "flow", Flowguard: true, Command: func() *exec.Cmd {
			return exec.Command(flowbench, "worker", "--nats-url", url, "--worker-id", "w1", "--concurrency", concurrency)
		}},
		{Name: "watermill", Prefix: "wm", Command: func() *exec.Cmd {
			return exec.Command(watermill, "--nats-url", url, "--prefix", "wm", "--nodes", nodes, "--concurrency", concurrency)
		}},
		{Name: "ceiling", Prefix: "ceil", Command: func() *exec.Cmd {
			return exec.Command(flowbench, "ceiling", "--nats-url", url, "--prefix", "ceil", "--nodes", nodes, "--concurrency", concurrency)
		}},
	}}
	res, err := bench.Compare(h.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 6 {
		t.Fatalf("%d points, want 6: %+v", len(res.Points), res.Points)
	}
	for _, p := range res.Points {
		name := p.System + " at " + strconv.Itoa(p.InFlight)
		if !p.ExactlyOnce || p.Completed != 50 {
			t.Errorf("%s: %d completed, %d failed, %d duplicate terminal events; want 50 exactly once", name, p.Completed, p.Failed, p.Duplicates)
		}
		if p.ExecPerSec <= 0 || p.P50MS <= 0 || p.CPUPerExecMS < 0 {
			t.Errorf("%s: implausible figures %+v", name, p)
		}
	}
}
