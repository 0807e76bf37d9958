// Package bench drives a flowguard deployment as users do and measures it:
// throughput and latency over a sweep of workflow sizes and worker concurrency, the
// raw JetStream ceiling of the same operations, halt propagation, recovery after a
// worker is killed, and worker memory. cmd/flowbench runs it.
package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/worker"
)

// Config of a run.
type Config struct {
	// URL of the NATS server; the caller starts an embedded one when the user gives none.
	URL string
	// Nodes and Concurrency are swept: each workflow size at each worker concurrency.
	Nodes       []int
	Concurrency []int
	// Requests per point of the sweep.
	Requests int
	// WorkerCommand starts a worker process (for recovery and memory), given extra
	// arguments; nil skips those measurements.
	WorkerCommand func(args ...string) *os.Process
	// AckWait of every worker the run starts (they share one consumer, so one
	// value); it is the recovery time measured.
	AckWait time.Duration
	// Progress is told how far each step is; it may be nil.
	Progress func(step string, done, total int)
	// HTTP also measures, at each concurrency, a workflow calling a simulated
	// exchange over HTTP beside a transform-only one (see HTTPPoint).
	HTTP bool
	// HaltRounds is the number of rounds of halt propagation; default 20.
	HaltRounds int
}

// Point is one point of the throughput sweep.
type Point struct {
	Nodes       int     `json:"nodes"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	ExecPerSec  float64 `json:"executions_per_second"`
	P50MS       float64 `json:"p50_ms"`
	P99MS       float64 `json:"p99_ms"`
	P999MS      float64 `json:"p99_9_ms"`
	// RawExecPerSec is the rate of raw JetStream operations equivalent to one
	// execution each, at the same concurrency: the ceiling.
	RawExecPerSec float64 `json:"raw_executions_per_second"`
	// Ratio is ExecPerSec / RawExecPerSec.
	Ratio float64 `json:"ratio_to_raw"`
}

// Results of a run.
type Results struct {
	Sweep []Point `json:"sweep"`
	// HTTP is the workload calling the simulated exchange, when asked for.
	HTTP []HTTPPoint `json:"http,omitempty"`
	Halt *Halt       `json:"halt_propagation,omitempty"`
	// Recovery is the time from SIGKILL of a worker to the last of its executions
	// resumed by another.
	Recovery *Recovery `json:"recovery,omitempty"`
	Memory   *Memory   `json:"memory,omitempty"`
}

// Halt is halt propagation: from publishing a halt until it is in force.
type Halt struct {
	Workers  int `json:"workers"`
	InFlight int `json:"in_flight"`
	Rounds   int `json:"rounds"`
	// InForceP50MS, InForceP99MS and InForceMaxMS: from publishing the halt until a
	// worker has applied it, every covered execution on it cancelled (the
	// applied_at it reports); one sample per worker and round.
	InForceP50MS float64 `json:"in_force_p50_ms"`
	InForceP99MS float64 `json:"in_force_p99_ms"`
	InForceMaxMS float64 `json:"in_force_max_ms"`
	// P50MS, P99MS and MaxMS: from publishing the halt to the time of each
	// interrupted node's node_failed event, the report of the interruption.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
	// FloorP50MS and FloorP99MS are the floor measured in the same rounds: from
	// publishing the halt to its delivery by an ordered consumer of the emergency
	// stream in this process, as each worker's follower receives it.
	FloorP50MS float64 `json:"floor_p50_ms"`
	FloorP99MS float64 `json:"floor_p99_ms"`
}

// Recovery is the time a killed worker's executions wait for another worker.
type Recovery struct {
	AckWaitMS  float64 `json:"ack_wait_ms"`
	Executions int     `json:"executions"`
	RecoverMS  float64 `json:"recover_ms"`
}

// Memory is a worker process's resident memory.
type Memory struct {
	IdleMB     float64 `json:"idle_mb"`
	InFlight   int     `json:"in_flight"`
	InFlightMB float64 `json:"in_flight_mb"`
}

// env is a connection to the deployment under test.
type env struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	client *client.Client
}

// connect returns the environment of a measurement against cfg.URL; the caller
// closes its connection.
func connect(cfg Config) (*env, error) {
	nc, err := nats.Connect(cfg.URL, nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cl, err := client.New(nc, "")
	if err != nil {
		nc.Close()
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string, int, int) {}
	}
	return &env{cfg: cfg, nc: nc, js: js, client: cl}, nil
}

// Run measures everything the configuration asks for.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	e, err := connect(cfg)
	if err != nil {
		return nil, err
	}
	defer e.nc.Close()
	res := &Results{}
	for _, n := range cfg.Nodes {
		for _, c := range cfg.Concurrency {
			p, err := e.sweepPoint(ctx, n, c)
			if err != nil {
				return nil, fmt.Errorf("%d nodes at concurrency %d: %w", n, c, err)
			}
			res.Sweep = append(res.Sweep, *p)
		}
	}
	if cfg.HTTP {
		if res.HTTP, err = e.httpSweep(ctx); err != nil {
			return nil, err
		}
	}
	if res.Halt, err = e.haltPropagation(ctx, 3, 300, cmp.Or(cfg.HaltRounds, 20)); err != nil {
		return nil, fmt.Errorf("halt propagation: %w", err)
	}
	if cfg.WorkerCommand != nil {
		if res.Recovery, err = e.recovery(ctx); err != nil {
			return nil, fmt.Errorf("recovery: %w", err)
		}
		if res.Memory, err = e.memory(ctx, 1000); err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
	}
	return res, nil
}

// startWorker runs a worker in this process until the returned stop is called.
func (e *env) startWorker(ctx context.Context, id string, concurrency int) (stop func(), err error) {
	cfg := worker.Config{WorkerID: id, Consumer: consumer.Config{Concurrency: concurrency, AckWait: e.cfg.AckWait,
		MaxAckPending: max(consumer.DefaultMaxAckPending, 2*concurrency)},
		EgressAllow: []string{"127.0.0.1"}} // the simulated exchange of the HTTP workload
	cfg.NATS.URL = e.cfg.URL
	w, err := worker.New(cfg, zerolog.Nop())
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !w.Ready() {
		select {
		case err := <-done:
			cancel()
			return nil, fmt.Errorf("worker %s stopped: %w", id, err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			return nil, fmt.Errorf("worker %s not ready within 30s", id)
		}
	}
	return func() { cancel(); <-done }, nil
}

// completions reports the time each execution ended (a terminal event reached this
// client), by execution id.
type completions struct {
	mu   sync.Mutex
	at   map[string]time.Time
	subs []*nats.Subscription
	wake chan struct{}
}

// watchCompletions records the events published on subjects (contract events,
// the terminal ones of the executions measured).
func (e *env) watchCompletions(subjects ...string) (*completions, error) {
	c := &completions{at: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	for _, subject := range subjects {
		sub, err := e.nc.Subscribe(subject, func(m *nats.Msg) {
			var ev contract.Event
			if json.Unmarshal(m.Data, &ev) != nil {
				return
			}
			c.mu.Lock()
			c.at[ev.ExecutionID] = time.Now()
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
		})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.subs = append(c.subs, sub)
	}
	return c, nil
}

func (c *completions) stop() {
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
}

func (c *completions) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.at)
}

func (c *completions) get(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.at[id]
	return t, ok
}

// waitCount waits until n executions are recorded.
func (c *completions) waitCount(ctx context.Context, n int, within time.Duration) error {
	deadline := time.After(within)
	for c.count() < n {
		select {
		case <-c.wake:
		case <-deadline:
			return fmt.Errorf("%d of %d executions seen within %s", c.count(), n, within)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sortDurations(d []time.Duration) { slices.Sort(d) }
