package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
)

// System is one implementation of the comparison's workload, run as a process.
type System struct {
	Name string
	// Prefix of its subjects: requests on <prefix>.exec.<workflow>, events on
	// <prefix>.events.<bot>.<workflow>.<exec>.<type>. Flowguard's is flow.
	Prefix string
	// Flowguard marks flowguard itself: its worker provisions its streams and the
	// workflow is deployed; the others bind to streams flowbench creates.
	Flowguard bool
	// Command is its worker process, not yet started.
	Command func() *exec.Cmd
}

// CompareConfig is a comparison of systems on one workload.
type CompareConfig struct {
	URL string
	// Nodes of the chain of transform nodes each request runs.
	Nodes int
	// InFlight values: the closed-loop driver keeps this many requests outstanding.
	InFlight []int
	// Requests measured per system and point, after Warmup requests not measured.
	Requests, Warmup int
	// Systems, run one after another at each point (interleaved).
	Systems []System
	// Progress is told how far each step is; it may be nil.
	Progress func(step string, done, total int)
}

// PeerPoint is one system at one number of requests in flight.
type PeerPoint struct {
	System     string  `json:"system"`
	InFlight   int     `json:"in_flight"`
	Requests   int     `json:"requests"`
	ExecPerSec float64 `json:"executions_per_second"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	// CPUPerExecMS is the worker process's CPU time (user and system) per
	// measured execution, in milliseconds.
	CPUPerExecMS float64 `json:"worker_cpu_ms_per_execution"`
	// Completed executions (warm-up included) with one execution_completed event;
	// Duplicates counts terminal events beyond the first of an execution, Failed the
	// executions that ended otherwise. ExactlyOnce: every request one terminal
	// event, execution_completed.
	Completed   int  `json:"completed"`
	Duplicates  int  `json:"duplicate_terminal_events"`
	Failed      int  `json:"failed"`
	ExactlyOnce bool `json:"exactly_once"`
}

// Comparison is the result of Compare.
type Comparison struct {
	Nodes    int         `json:"nodes"`
	Requests int         `json:"requests"`
	Warmup   int         `json:"warmup"`
	Points   []PeerPoint `json:"points"`
}

// peerNames are the streams and bucket of a system other than flowguard.
type peerNames struct{ exec, events, bucket string }

func peerStreams(prefix string) peerNames {
	p := strings.ToUpper(prefix)
	return peerNames{exec: p + "_EXEC", events: p + "_EVENTS", bucket: prefix + "_state"}
}

// Compare measures each system on the same workload against one server: for each
// number of requests in flight, the systems one after another, each in a fresh
// worker process, with the same closed-loop driver.
func Compare(ctx context.Context, cfg CompareConfig) (*Comparison, error) {
	e, err := connect(Config{URL: cfg.URL, Progress: cfg.Progress})
	if err != nil {
		return nil, err
	}
	defer e.nc.Close()
	for _, s := range cfg.Systems {
		if s.Flowguard {
			continue
		}
		cleanup, err := provisionPeer(ctx, e.js, s.Prefix)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		defer cleanup()
	}
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	res := &Comparison{Nodes: cfg.Nodes, Requests: cfg.Requests, Warmup: cfg.Warmup}
	for _, inFlight := range cfg.InFlight {
		for _, s := range cfg.Systems {
			wf := fmt.Sprintf("peer-%s-%d", run, inFlight)
			p, err := e.comparePoint(ctx, cfg, s, wf, inFlight)
			if err != nil {
				return nil, fmt.Errorf("%s at %d in flight: %w", s.Name, inFlight, err)
			}
			res.Points = append(res.Points, *p)
		}
	}
	return res, nil
}

// provisionPeer creates the streams and bucket of a system other than flowguard,
// in the same storage as flowguard's, and a function removing them. The systems
// create their consumers.
func provisionPeer(ctx context.Context, js jetstream.JetStream, prefix string) (cleanup func(), err error) {
	n := peerStreams(prefix)
	cleanup = func() {
		c := context.WithoutCancel(ctx)
		_ = js.DeleteStream(c, n.exec)
		_ = js.DeleteStream(c, n.events)
		_ = js.DeleteKeyValue(c, n.bucket)
	}
	cleanup() // what an interrupted run left
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: n.exec, Subjects: []string{prefix + ".exec.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n.events, Subjects: []string{prefix + ".events.>"},
		Storage: jetstream.FileStorage}); err != nil {
		return nil, err
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: n.bucket, History: 1, Storage: jetstream.FileStorage}); err != nil {
		return nil, err
	}
	return cleanup, nil
}

// comparePoint runs one system at one number of requests in flight.
func (e *env) comparePoint(ctx context.Context, cfg CompareConfig, s System, wf string, inFlight int) (*PeerPoint, error) {
	cmd := s.Command()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	// The measurement stops as soon as the worker exits, saying so.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		cancel(fmt.Errorf("the %s worker exited: %v", s.Name, err))
		close(exited)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()
	p, err := e.measure(wctx, cfg, s, wf, inFlight, cmd.Process.Pid)
	if err != nil {
		if cause := context.Cause(wctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return nil, cause
		}
		return nil, err
	}
	stop()
	if err := e.checkExactlyOnce(ctx, s, wf, cfg.Warmup+cfg.Requests, p); err != nil {
		return nil, err
	}
	return p, nil
}

// measure drives a running worker process: the warm-up, then the measurement.
func (e *env) measure(ctx context.Context, cfg CompareConfig, s System, wf string, inFlight, pid int) (*PeerPoint, error) {
	submit := func(ctx context.Context, id string, i int) error {
		msg := nats.NewMsg(s.Prefix + ".exec." + wf)
		msg.Data = fmt.Appendf(nil, `{"workflow_id": %q, "bot_id": "bench", "request_id": %q, "inputs": {"n": %d}}`, wf, id, i)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Header.Set("_watermill_message_uuid", id)
		_, err := e.js.PublishMsg(ctx, msg)
		return err
	}
	if s.Flowguard {
		if err := deployWhenReady(ctx, e.client, chainWorkflow(wf, cfg.Nodes)); err != nil {
			return nil, err
		}
		submit = func(ctx context.Context, id string, i int) error {
			_, err := e.client.Submit(ctx, &contract.Request{WorkflowID: wf, BotID: "bench", RequestID: id, Inputs: map[string]any{"n": i}})
			return err
		}
	}
	events := func(typ string) string { return fmt.Sprintf("%s.events.*.%s.*.%s", s.Prefix, wf, typ) }
	done, err := e.watchCompletions(events(contract.ExecutionCompleted), events(contract.ExecutionFailed))
	if err != nil {
		return nil, err
	}
	defer done.stop()

	step := fmt.Sprintf("%s, %d in flight", s.Name, inFlight)
	if _, _, err := e.closedLoop(ctx, done, submit, wf+"-w", cfg.Warmup, inFlight, step+" (warm-up)"); err != nil {
		return nil, err
	}
	cpu0, err := processCPU(pid)
	if err != nil {
		return nil, err
	}
	latencies, elapsed, err := e.closedLoop(ctx, done, submit, wf+"-m", cfg.Requests, inFlight, step)
	if err != nil {
		return nil, err
	}
	cpu1, err := processCPU(pid)
	if err != nil {
		return nil, err
	}
	return &PeerPoint{System: s.Name, InFlight: inFlight, Requests: cfg.Requests,
		ExecPerSec: float64(cfg.Requests) / elapsed.Seconds(),
		P50MS:      percentile(latencies, 0.5), P99MS: percentile(latencies, 0.99),
		CPUPerExecMS: ms(cpu1-cpu0) / float64(cfg.Requests)}, nil
}

// deployWhenReady deploys a workflow once the worker has created the buckets.
func deployWhenReady(ctx context.Context, cl *client.Client, def string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := cl.Deploy(ctx, []byte(def))
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("deploy the workflow: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// closedLoop sends n requests with ids <prefix>-<run>-<i>, as many outstanding as
// inFlight, and returns each one's latency (sorted) and the time until the last
// one ended.
func (e *env) closedLoop(ctx context.Context, done *completions, submit func(context.Context, string, int) error,
	prefix string, n, inFlight int, step string) ([]time.Duration, time.Duration, error) {
	base := done.count()
	ids := make([]string, n)
	sent := make([]time.Time, n)
	start := time.Now()
	for i := range n {
		for i-(done.count()-base) >= inFlight {
			if err := done.waitCount(ctx, base+i-inFlight+1, time.Minute); err != nil {
				return nil, 0, err
			}
		}
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		sent[i] = time.Now()
		if err := submit(ctx, ids[i], i); err != nil {
			return nil, 0, fmt.Errorf("submit: %w", err)
		}
		if i%100 == 0 {
			e.cfg.Progress(step, done.count()-base, n)
		}
	}
	if err := done.waitCount(ctx, base+n, 2*time.Minute); err != nil {
		return nil, 0, err
	}
	e.cfg.Progress(step, n, n)
	var last time.Time
	latencies := make([]time.Duration, n)
	for i, id := range ids {
		at, _ := done.get(id)
		latencies[i] = at.Sub(sent[i])
		if at.After(last) {
			last = at
		}
	}
	sortDurations(latencies)
	return latencies, last.Sub(start), nil
}

// checkExactlyOnce counts the stored terminal events of the run's executions.
func (e *env) checkExactlyOnce(ctx context.Context, s System, wf string, total int, p *PeerPoint) error {
	stream := peerStreams(s.Prefix).events
	if s.Flowguard {
		stream = contract.StreamEvents
	}
	str, err := e.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	for _, typ := range []string{contract.ExecutionCompleted, contract.ExecutionFailed, contract.ExecutionHalted, contract.ExecutionRejected} {
		info, err := str.Info(ctx, jetstream.WithSubjectFilter(fmt.Sprintf("%s.events.*.%s.*.%s", s.Prefix, wf, typ)))
		if err != nil {
			return fmt.Errorf("count %s events: %w", typ, err)
		}
		for _, n := range info.State.Subjects {
			if typ == contract.ExecutionCompleted {
				p.Completed++
			} else {
				p.Failed++
			}
			p.Duplicates += int(n) - 1
		}
	}
	p.ExactlyOnce = p.Completed == total && p.Failed == 0 && p.Duplicates == 0
	return nil
}

// processCPU is the CPU time (user and system) a process has used so far.
func processCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of process %d (needs Linux /proc): %w", pid, err)
	}
	// Fields after the command name (which may hold spaces) start at field 3, state.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc/<pid>/stat format")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// Linux reports clock ticks of USER_HZ, 100 per second on every mainstream build.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
