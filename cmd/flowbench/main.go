// Command flowbench measures flowguard as users drive it: throughput and latency
// over a sweep of workflow sizes and worker concurrency beside the raw JetStream
// ceiling, halt propagation, recovery after SIGKILL and worker memory. See
// docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"
	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/bench"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/embedded"
	"github.com/flowguard/flowguard/internal/worker"
)

type cli struct {
	Run     runCmd     `cmd:"" default:"withargs" help:"Run the benchmark (default)."`
	Peer    peerCmd    `cmd:"" help:"Compare flowguard with the Watermill peer and the JetStream ceiling on one workload."`
	Worker  workerCmd  `cmd:"" hidden:"" help:"Run a worker process for the recovery and memory measurements."`
	Ceiling ceilingCmd `cmd:"" hidden:"" help:"Run the ceiling's worker process for the comparison."`
}

type peerCmd struct {
	NATSURL     string   `name:"nats-url" help:"NATS server to measure (default: an embedded server in a temporary directory)." env:"FLOWGUARD_NATS_URL"`
	InFlight    []int    `help:"Requests kept outstanding by the driver, one point each." default:"1,16,64"`
	Requests    int      `help:"Requests measured per system and point." default:"5000"`
	Warmup      int      `help:"Requests run before each measurement, not measured." default:"500"`
	Nodes       int      `help:"Transform nodes in the chain each request runs." default:"3"`
	Concurrency int      `help:"Requests each system's worker runs at once (flowguard's --concurrency)." default:"64"`
	Systems     []string `help:"Systems to run, in this order at each point." default:"flowguard,watermill,ceiling" enum:"flowguard,watermill,ceiling"`
	Watermill   string   `help:"Directory of the Watermill peer's Go module, built with the go command." default:"bench/watermill" type:"path"`
	JSON        string   `help:"Also write the results as JSON to this file." type:"path"`
}

type ceilingCmd struct {
	NATSURL     string `name:"nats-url" required:""`
	Prefix      string `required:""`
	Nodes       int    `default:"3"`
	Concurrency int    `default:"64"`
}

type runCmd struct {
	NATSURL     string        `name:"nats-url" help:"NATS server to measure (default: an embedded server in a temporary directory)." env:"FLOWGUARD_NATS_URL"`
	Nodes       []int         `help:"Workflow sizes (transform nodes in a chain)." default:"1,3,10"`
	Concurrency []int         `help:"Worker concurrency values to sweep." default:"1,16,64"`
	Requests    int           `help:"Requests per point of the sweep." default:"2000"`
	AckWait     time.Duration `help:"Ack wait of every worker the run starts: the recovery time after a SIGKILL." default:"2s"`
	NoProcesses bool          `help:"Skip the measurements that need worker processes (recovery, memory)."`
	JSON        string        `help:"Also write the results as JSON to this file." type:"path"`
	HTTP        bool          `help:"Also measure, at each concurrency, a workflow calling a simulated exchange over HTTP (ticker, then order) beside a 2-node transform workflow." default:"true" negatable:""`
	HaltRounds  int           `help:"Rounds of the halt propagation step (each halts 300 executions on 3 workers)." default:"20"`
}

type workerCmd struct {
	NATSURL     string        `name:"nats-url" required:""`
	WorkerID    string        `required:""`
	Concurrency int           `default:"16"`
	AckWait     time.Duration `default:"2s"`
	// Profile names files to write the worker's CPU and allocation profiles to
	// (<profile>.cpu, <profile>.mem), to see where an execution's CPU goes.
	Profile string `env:"FLOWBENCH_WORKER_PROFILE" help:"Write the worker's CPU and heap profiles to this path (.cpu, .mem) while it runs."`
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
	worker.SetGCPercent() // as the worker command does
	cfg := worker.Config{WorkerID: w.WorkerID, Consumer: consumer.Config{Concurrency: w.Concurrency, AckWait: w.AckWait,
		MaxAckPending: max(consumer.DefaultMaxAckPending, 2*w.Concurrency)}}
	cfg.NATS.URL = w.NATSURL
	wk, err := worker.New(cfg, zerolog.New(os.Stderr).Level(zerolog.ErrorLevel))
	if err != nil {
		return err
	}
	if w.Profile == "" {
		return wk.Run(ctx)
	}
	stop, err := startProfile(w.Profile)
	if err != nil {
		return err
	}
	err = wk.Run(ctx)
	return errors.Join(err, stop())
}

// startProfile starts a CPU profile to path.cpu; the returned function stops it
// and writes the heap profile (allocations included) to path.mem.
func startProfile(path string) (func() error, error) {
	path = fmt.Sprintf("%s-%d", path, os.Getpid())
	f, err := os.Create(path + ".cpu")
	if err != nil {
		return nil, fmt.Errorf("create the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start the CPU profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		m, err := os.Create(path + ".mem")
		if err == nil {
			err = pprof.Lookup("allocs").WriteTo(m, 0)
			m.Close()
		}
		return errors.Join(f.Close(), err)
	}, nil
}

func (c *ceilingCmd) Run(ctx context.Context) error {
	nc, err := nats.Connect(c.NATSURL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	return bench.Ceiling(ctx, nc, c.Prefix, c.Nodes, c.Concurrency)
}

// server returns url, or starts an embedded server in a temporary directory when
// it is empty; the returned function stops it.
func server(url string) (string, func(), error) {
	if url != "" {
		return url, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "flowbench-")
	if err != nil {
		return "", nil, err
	}
	srv, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: -1, StoreDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return srv.ClientURL(), func() { srv.Shutdown(); os.RemoveAll(dir) }, nil
}

func (p *peerCmd) Run(ctx context.Context) error {
	url, stopServer, err := server(p.NATSURL)
	if err != nil {
		return err
	}
	defer stopServer()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := bench.CompareConfig{URL: url, Nodes: p.Nodes, InFlight: p.InFlight, Requests: p.Requests, Warmup: p.Warmup,
		Progress: progressBar(os.Stderr)}
	conc := fmt.Sprint(p.Concurrency)
	for _, name := range p.Systems {
		s := bench.System{Name: name, Prefix: name}
		switch name {
		case "flowguard":
			s.Prefix, s.Flowguard = "flow", true
			s.Command = func() *exec.Cmd {
				return exec.Command(self, "worker", "--nats-url", url, "--worker-id", "peer-bench", "--concurrency", conc)
			}
		case "watermill":
			bin, err := buildWatermill(p.Watermill)
			if err != nil {
				return err
			}
			defer os.RemoveAll(filepath.Dir(bin))
			s.Command = func() *exec.Cmd {
				return exec.Command(bin, "--nats-url", url, "--prefix", s.Prefix, "--nodes", fmt.Sprint(p.Nodes), "--concurrency", conc)
			}
		case "ceiling":
			s.Command = func() *exec.Cmd {
				return exec.Command(self, "ceiling", "--nats-url", url, "--prefix", s.Prefix, "--nodes", fmt.Sprint(p.Nodes), "--concurrency", conc)
			}
		}
		cfg.Systems = append(cfg.Systems, s)
	}
	res, err := bench.Compare(ctx, cfg)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	printComparison(os.Stdout, res)
	if p.JSON != "" {
		data, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(p.JSON, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// buildWatermill builds the Watermill peer's module into a temporary directory.
func buildWatermill(module string) (string, error) {
	if _, err := os.Stat(filepath.Join(module, "go.mod")); err != nil {
		return "", fmt.Errorf("the Watermill peer's module is not at %s: run flowbench from the repository root or pass --watermill", module)
	}
	dir, err := os.MkdirTemp("", "flowbench-watermill-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "watermill-peer")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = module
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build the Watermill peer in %s (needs the go command and its modules): %v\n%s", module, err, out)
	}
	return bin, nil
}

// printComparison prints each point with its ratios to the peer and the ceiling.
func printComparison(w io.Writer, res *bench.Comparison) {
	fmt.Fprintf(w, "%d transform nodes, %d requests per point after %d of warm-up\n", res.Nodes, res.Requests, res.Warmup)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tin flight\texec/s\tp50 ms\tp99 ms\tCPU ms/exec\tvs watermill\tvs ceiling\texactly once\t")
	find := func(system string, inFlight int) *bench.PeerPoint {
		for i := range res.Points {
			if p := &res.Points[i]; p.System == system && p.InFlight == inFlight {
				return p
			}
		}
		return nil
	}
	ratio := func(p *bench.PeerPoint, system string) string {
		if o := find(system, p.InFlight); o != nil && o.ExecPerSec > 0 {
			return fmt.Sprintf("%.2fx", p.ExecPerSec/o.ExecPerSec)
		}
		return "-"
	}
	for i := range res.Points {
		p := &res.Points[i]
		once := "yes"
		if !p.ExactlyOnce {
			once = fmt.Sprintf("NO: %d completed, %d failed, %d duplicates", p.Completed, p.Failed, p.Duplicates)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.3f\t%s\t%s\t%s\t\n", p.System, p.InFlight, p.ExecPerSec, p.P50MS, p.P99MS,
			p.CPUPerExecMS, ratio(p, "watermill"), ratio(p, "ceiling"), once)
	}
	tw.Flush()
}

func (r *runCmd) Run(ctx context.Context) error {
	url, stopServer, err := server(r.NATSURL)
	if err != nil {
		return err
	}
	defer stopServer()
	cfg := bench.Config{
		URL: url, Nodes: r.Nodes, Concurrency: r.Concurrency, Requests: r.Requests, AckWait: r.AckWait,
		Progress: progressBar(os.Stderr), HTTP: r.HTTP, HaltRounds: r.HaltRounds,
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
	printHTTP(w, res.HTTP)
	if h := res.Halt; h != nil {
		fmt.Fprintf(w, "\nhalt propagation (%d workers, %d in flight, %d rounds), from publishing the halt:\n", h.Workers, h.InFlight, h.Rounds)
		fmt.Fprintf(w, "  in force on a worker (applied, every covered execution cancelled): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", h.InForceP50MS, h.InForceP99MS, h.InForceMaxMS)
		fmt.Fprintf(w, "  floor (the emergency stream's delivery to a watch):                p50 %.2f ms, p99 %.2f ms\n", h.FloorP50MS, h.FloorP99MS)
		fmt.Fprintf(w, "  reported (each interrupted node's node_failed event):              p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", h.P50MS, h.P99MS, h.MaxMS)
	}
	if r := res.Recovery; r != nil {
		fmt.Fprintf(w, "recovery after SIGKILL: %d executions resumed by another worker within %.0f ms (ack wait %.0f ms)\n",
			r.Executions, r.RecoverMS, r.AckWaitMS)
	}
	if m := res.Memory; m != nil {
		fmt.Fprintf(w, "worker memory (RSS): idle %.1f MB, %d executions in flight %.1f MB\n", m.IdleMB, m.InFlight, m.InFlightMB)
	}
}
