// Package worker wires a flowguard worker: it connects to NATS (or starts an
// embedded server), provisions the streams and buckets, and consumes execution
// requests: decode and validate, emergency gate, execute, persist, acknowledge.
package worker

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/embedded"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/natsconn"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/publish"
	"github.com/flowguard/flowguard/internal/resilience"
)

// Worker consumes execution requests and runs them.
type Worker struct {
	cfg      Config
	log      zerolog.Logger
	subjects contract.Subjects

	js     jetstream.JetStream
	events jetstream.Stream
	// execStreamTag is FLOW_EXEC's creation time in base 36, part of generated execution ids.
	execStreamTag string
	store         *kvstate.Store
	pub           *publish.Publisher
	registry      *nodes.Registry
	exec          *executor.Executor
	plans         *plans
	ctrl          *emergency.Controller
	risk          *emergency.Risk

	ready atomic.Bool
}

// New checks cfg and returns a worker; Run starts it.
func New(cfg Config, log zerolog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return &Worker{
		cfg:      cfg,
		log:      log.With().Str("worker_id", cfg.WorkerID).Logger(),
		subjects: contract.Subjects{Prefix: cfg.Prefix},
		registry: nodes.NewRegistry(),
	}, nil
}

// Ready reports whether the worker is consuming and knows the current emergency
// state: a worker is not ready before it knows whether trading is halted.
func (w *Worker) Ready() bool { return w.ready.Load() && w.ctrl.Ready() }

// Run connects, provisions and handles requests until ctx ends, then shuts down
// gracefully (see consumer.Consumer.Run) and returns.
func (w *Worker) Run(ctx context.Context) error {
	if w.cfg.NATS.URL == "" {
		srv, err := w.startEmbedded()
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		w.cfg.NATS.URL = srv.ClientURL()
	}
	nc, err := natsconn.Connect(w.cfg.NATS, "flowguard-worker "+w.cfg.WorkerID, w.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := w.setup(ctx, nc); err != nil {
		return err
	}
	cons, err := consumer.New(w.js, w.cfg.Consumer, w.handle, w.log, consumer.WithGate(w.canStart))
	if err != nil {
		return err
	}

	// The emergency controller and the risk watch outlive the consumer: in-flight
	// executions stay under halt control while they finish.
	followCtx, stopFollowing := context.WithCancel(context.WithoutCancel(ctx))
	var followers sync.WaitGroup
	followers.Add(2)
	go func() { defer followers.Done(); _ = w.ctrl.Run(followCtx) }()
	go func() { defer followers.Done(); _ = w.risk.Run(followCtx) }()
	defer func() { stopFollowing(); followers.Wait() }()
	if err := w.awaitEmergencyState(ctx); err != nil {
		return err
	}

	w.ready.Store(true)
	defer w.ready.Store(false)
	w.log.Info().Str("nats", nc.ConnectedUrlRedacted()).Int("concurrency", w.cfg.Consumer.Concurrency).Msg("worker started")
	err = cons.Run(ctx)
	if derr := nc.Drain(); derr != nil && derr != nats.ErrConnectionClosed {
		w.log.Warn().Err(derr).Msg("drain connection")
	}
	w.log.Info().Msg("worker stopped")
	return err
}

func (w *Worker) startEmbedded() (*server.Server, error) {
	host, portText, err := net.SplitHostPort(w.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w; use host:port such as 127.0.0.1:4222", w.cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: port must be a number", w.cfg.Listen)
	}
	dir, err := filepath.Abs(w.cfg.DataDir)
	if err == nil {
		err = os.MkdirAll(dir, 0o750)
	}
	if err != nil {
		return nil, fmt.Errorf("data directory %q: %w", w.cfg.DataDir, err)
	}
	srv, err := embedded.Start(embedded.Options{Host: host, Port: port, StoreDir: dir, SyncAlways: w.cfg.SyncAlways})
	if err != nil {
		return nil, err
	}
	w.log.Info().Str("url", srv.ClientURL()).Str("data_dir", dir).Bool("sync_always", w.cfg.SyncAlways).Msg("embedded NATS server started")
	return srv, nil
}

// setup provisions the streams and buckets and builds the worker's parts.
func (w *Worker) setup(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// A cluster that is forming, or electing a leader, does not answer yet.
	var buckets *provision.Buckets
	err = resilience.RetryIO(ctx, func(err error) bool { return !provision.Unavailable(err) }, func(ctx context.Context) error {
		var err error
		if buckets, err = provision.Ensure(ctx, js, w.cfg.Provision); provision.Unavailable(err) {
			w.log.Warn().Err(err).Msg("JetStream not available yet, retrying")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("provision streams and buckets: %w", err)
	}
	events, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", contract.StreamEvents, err)
	}
	execStream, err := js.Stream(ctx, contract.StreamExec)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", contract.StreamExec, err)
	}
	w.execStreamTag = strconv.FormatInt(execStream.CachedInfo().Created.Unix(), 36)
	w.js = js
	w.events = events
	w.store = kvstate.New(buckets.State, buckets.Workflows)
	w.pub = publish.New(js, w.subjects)
	w.ctrl = emergency.New(js, emergency.Config{Subjects: w.subjects, Staleness: w.cfg.EmergencyStaleness}, w.log)
	w.risk, err = emergency.NewRisk(buckets.Risk, w.ctrl, w.pub, emergency.RiskConfig{
		Subjects: w.subjects, Day: w.cfg.tradingDay, Limits: w.cfg.RiskLimits, IssuedBy: "flowguard-risk@" + w.cfg.WorkerID,
	}, w.log)
	if err != nil {
		return err
	}
	w.registry.Register("order", nodes.Order{Desk: desk{ctrl: w.ctrl, risk: w.risk, pub: w.pub}})
	w.registry.Register("risk_update", nodes.RiskUpdate{Metrics: w.risk})
	w.exec = executor.New(w.store, guard{w.ctrl}, executor.Config{MaxParallelNodes: w.cfg.MaxParallelNodes})
	w.plans = newPlans(w.store, w.registry)
	return nil
}

// awaitEmergencyState waits until the emergency state is loaded: a worker started
// during a halt must never run anything.
func (w *Worker) awaitEmergencyState(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	logged := time.Now()
	for !w.ctrl.Ready() {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if time.Since(logged) > 5*time.Second {
			w.log.Warn().Msg("waiting for the emergency state before taking requests")
			logged = time.Now()
		}
	}
	return nil
}

// canStart gates fetching: while the emergency state is unconfirmed, requests stay
// in the stream.
func (w *Worker) canStart() error {
	if w.ctrl.Ready() {
		return nil
	}
	return emergency.ErrStale
}
