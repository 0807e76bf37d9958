// Command flowbench measures flowguard as users drive it: throughput and latency
// over a sweep of workflow sizes and worker concurrency beside the raw JetStream
// ceiling, halt propagation, recovery after SIGKILL and worker memory. See
// docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/bench"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/embedded"
	"github.com/flowguard/flowguard/internal/worker"
)

type cli struct {
	Run    runCmd    `cmd:"" default:"withargs" help:"Run the benchmark (default)."`
	Worker workerCmd `cmd:"" hidden:"" help:"Run a worker process for the recovery and memory measurements."`
}

type runCmd struct {
	NATSURL     string        `name:"nats-url" help:"NATS server to measure (default: an embedded server in a temporary directory)." env:"FLOWGUARD_NATS_URL"`
	Nodes       []int         `help:"Workflow sizes (transform nodes in a chain)." default:"1,3,10"`
	Concurrency []int         `help:"Worker concurrency values to sweep." default:"1,16,64"`
	Requests    int           `help:"Requests per point of the sweep." default:"2000"`
	AckWait     time.Duration `help:"Ack wait of every worker the run starts: the recovery time after a SIGKILL." default:"3s"`
	NoProcesses bool          `help:"Skip the measurements that need worker processes (recovery, memory)."`
	JSON        string        `help:"Also write the results as JSON to this file." type:"path"`
}

type workerCmd struct {
	NATSURL     string        `name:"nats-url" required:""`
	WorkerID    string        `required:""`
	Concurrency int           `default:"16"`
	AckWait     time.Duration `default:"30s"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cli
	k := kong.Parse(&c, kong.Name("flowbench"), kong.Description("Measure flowguard against the raw JetStream ceiling."),
		kong.BindTo(ctx, (*context.Context)(nil)))
	if err := k.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "flowbench:", err)
		os.Exit(1)
	}
}

func (w *workerCmd) Run(ctx context.Context) error {
	cfg := worker.Config{WorkerID: w.WorkerID, Consumer: consumer.Config{Concurrency: w.Concurrency, AckWait: w.AckWait,
		MaxAckPending: max(consumer.DefaultMaxAckPending, 2*w.Concurrency)}}
	cfg.NATS.URL = w.NATSURL
	wk, err := worker.New(cfg, zerolog.New(os.Stderr).Level(zerolog.ErrorLevel))
	if err != nil {
		return err
	}
	return wk.Run(ctx)
}

func (r *runCmd) Run(ctx context.Context) error {
	url := r.NATSURL
	if url == "" {
		dir, err := os.MkdirTemp("", "flowbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: -1, StoreDir: dir})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
	}
	cfg := bench.Config{
		URL: url, Nodes: r.Nodes, Concurrency: r.Concurrency, Requests: r.Requests, AckWait: r.AckWait,
		Progress: progressBar(os.Stderr),
	}
	if !r.NoProcesses {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.WorkerCommand = func(args ...string) *os.Process {
			cmd := exec.Command(self, append([]string{"worker", "--nats-url", url}, args...)...)
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "flowbench: start worker:", err)
				return nil
			}
			return cmd.Process
		}
	}
	res, err := bench.Run(ctx, cfg)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	printTable(os.Stdout, res)
	if r.JSON != "" {
		data, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(r.JSON, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// progressBar redraws one line on a terminal for each step; elsewhere it prints a
// line when a step is done.
func progressBar(w *os.File) func(step string, done, total int) {
	if !isatty.IsTerminal(w.Fd()) {
		return func(step string, done, total int) {
			if done == total {
				fmt.Fprintf(w, "%s: done\n", step)
			}
		}
	}
	return func(step string, done, total int) {
		const width = 30
		filled := 0
		if total > 0 {
			filled = width * done / total
		}
		fmt.Fprintf(w, "\r%-45s [%s%s] %d/%d ", step, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, total)
	}
}

func printTable(w io.Writer, res *bench.Results) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tconcurrency\texec/s\tp50 ms\tp99 ms\tp99.9 ms\traw exec/s\tflowguard/raw\t")
	for _, p := range res.Sweep {
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t\n", p.Nodes, p.Concurrency, p.ExecPerSec, p.P50MS, p.P99MS, p.P999MS, p.RawExecPerSec, p.Ratio)
	}
	tw.Flush()
	if h := res.Halt; h != nil {
		fmt.Fprintf(w, "\nhalt propagation (%d workers, %d in flight, %d rounds): p50 %.2f ms, p99 %.2f ms, max %.2f ms; floor (the emergency stream's delivery to a watch) p50 %.2f ms, p99 %.2f ms\n",
			h.Workers, h.InFlight, h.Rounds, h.P50MS, h.P99MS, h.MaxMS, h.FloorP50MS, h.FloorP99MS)
	}
	if r := res.Recovery; r != nil {
		fmt.Fprintf(w, "recovery after SIGKILL: %d executions resumed by another worker within %.0f ms (ack wait %.0f ms)\n",
			r.Executions, r.RecoverMS, r.AckWaitMS)
	}
	if m := res.Memory; m != nil {
		fmt.Fprintf(w, "worker memory (RSS): idle %.1f MB, %d executions in flight %.1f MB\n", m.IdleMB, m.InFlight, m.InFlightMB)
	}
}
