// Command demo plays a trading day against a simulated exchange: an embedded
// worker, the exchange and two bots, through normal trading, an exchange outage,
// a losing streak that halts a bot, an operator's resume and several workflows at
// once, narrating the events as they happen. See docs/demo.md.
//
//	go run ./examples/demo            # about a minute
//	go run ./examples/demo --short    # the same, shorter
//	go run ./examples/demo --separate # the worker and the exchange as processes
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/examples/mockexchange"
	"github.com/flowguard/flowguard/internal/worker"
)

type cli struct {
	Run      runCmd      `cmd:"" default:"withargs" help:"Play the demo (default)."`
	Worker   workerCmd   `cmd:"" hidden:"" help:"Run the demo's worker with an embedded NATS server (--separate)."`
	Exchange exchangeCmd `cmd:"" hidden:"" help:"Run the simulated exchange (--separate)."`
}

type runCmd struct {
	Short       bool   `help:"Fewer trades and shorter outages (about 20 seconds)."`
	Separate    bool   `help:"Run the worker (with its embedded NATS server) and the simulated exchange as separate processes."`
	NATSURL     string `name:"nats-url" help:"Use this NATS deployment instead of an embedded one; its workers need the settings the demo prints."`
	ExchangeURL string `help:"Use this simulated exchange (go run ./examples/mockexchange/cmd) instead of one in the process."`
	WorkerLog   bool   `help:"Show the in-process worker's warnings and errors on stderr."`
}

type workerCmd struct {
	Listen  string `required:""`
	DataDir string `required:""`
	Short   bool
}

type exchangeCmd struct{}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cli
	k := kong.Parse(&c, kong.Name("demo"), kong.Description("A trading day on flowguard against a simulated exchange."),
		kong.BindTo(ctx, (*context.Context)(nil)))
	if err := k.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func (r *runCmd) Run(ctx context.Context) error {
	opts := Options{Short: r.Short, NATSURL: r.NATSURL, ExchangeURL: r.ExchangeURL}
	if r.WorkerLog {
		opts.WorkerLog = os.Stderr
	}
	if r.Separate {
		stop, err := startProcesses(ctx, &opts)
		if err != nil {
			return err
		}
		defer stop()
	}
	s, err := Run(ctx, opts, os.Stdout)
	if err != nil {
		return err
	}
	if p := s.Problems(); len(p) > 0 {
		return fmt.Errorf("the run did not show everything it should: %s", strings.Join(p, "; "))
	}
	return nil
}

// startProcesses starts this program's worker and exchange commands as child
// processes and points opts at them; stop ends them.
func startProcesses(ctx context.Context, opts *Options) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "flowguard-demo-")
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
		}
		os.RemoveAll(dir)
	}
	start := func(args ...string) *exec.Cmd {
		c := exec.Command(self, args...)
		c.Stderr = os.Stderr
		return c
	}

	ex := start("exchange")
	out, err := ex.StdoutPipe()
	if err != nil {
		stop()
		return nil, err
	}
	if err := ex.Start(); err != nil {
		stop()
		return nil, fmt.Errorf("start the exchange process: %w", err)
	}
	cmds = append(cmds, ex)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return nil, fmt.Errorf("the exchange process did not say its address: %w", err)
	}
	opts.ExchangeURL = strings.TrimSpace(line)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stop()
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"worker", "--listen", addr, "--data-dir", dir}
	if opts.Short {
		args = append(args, "--short")
	}
	wk := start(args...)
	if err := wk.Start(); err != nil {
		stop()
		return nil, fmt.Errorf("start the worker process: %w", err)
	}
	cmds = append(cmds, wk)
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("the worker process's NATS server did not listen on %s within 60s", addr)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			stop()
			return nil, err
		}
	}
	opts.NATSURL = "nats://" + addr
	fmt.Printf("worker process %d (embedded NATS on %s), exchange process %d on %s\n", wk.Process.Pid, addr, ex.Process.Pid, opts.ExchangeURL)
	return stop, nil
}

func (w *workerCmd) Run(ctx context.Context) error {
	cfg := workerConfig("", timings(w.Short))
	cfg.Listen, cfg.DataDir = w.Listen, w.DataDir
	wk, err := worker.New(cfg, zerolog.New(os.Stderr).With().Timestamp().Logger().Level(zerolog.WarnLevel))
	if err != nil {
		return err
	}
	return wk.Run(ctx)
}

func (e *exchangeCmd) Run(ctx context.Context) error {
	s, err := mockexchange.Start(mockexchange.Config{WeightLimit: 100000})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Println(s.URL)
	<-ctx.Done()
	return nil
}
