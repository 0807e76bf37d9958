// Package worker wires a flowguard worker: it connects to NATS (or starts an
// embedded server), provisions the streams and buckets, and consumes execution
// requests: decode and validate, emergency gate, execute, persist, acknowledge.
package worker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/breakers"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/embedded"
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
	exec          *executor.Executor
	plans         *plans
	secrets       *nodes.Secrets
	settings      resilience.Settings
	breakers      *breakers.Sync

	ready atomic.Bool
}

// New checks cfg and the secrets it lists, and returns a worker; Run starts it.
func New(cfg Config, log zerolog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	secrets, err := nodes.NewSecrets(cfg.Resilience.SecretEnv, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return &Worker{
		cfg:      cfg,
		log:      log.With().Str("worker_id", cfg.WorkerID).Logger(),
		subjects: contract.Subjects{Prefix: cfg.Prefix},
		secrets:  secrets,
	}, nil
}

// Ready reports whether the worker is connected, provisioned and consuming.
func (w *Worker) Ready() bool { return w.ready.Load() }

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
	// The breakers' sync outlives ctx: it reports breaker changes until the
	// in-flight executions are done.
	syncCtx, stopSync := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSync()
	watch, err := w.setup(ctx, syncCtx, nc)
	if err != nil {
		return err
	}
	var syncing sync.WaitGroup
	syncing.Go(func() { w.breakers.Run(syncCtx, watch) })
	stopBreakers := func() { stopSync(); syncing.Wait() }
	defer stopBreakers()
	cons, err := consumer.New(w.js, w.cfg.Consumer, w.handle, w.log)
	if err != nil {
		return err
	}
	w.ready.Store(true)
	defer w.ready.Store(false)
	rs := w.settings
	w.log.Info().Str("nats", nc.ConnectedUrlRedacted()).Int("concurrency", w.cfg.Consumer.Concurrency).
		Str("profile", w.cfg.Resilience.Profile).Dur("node_timeout", rs.Timeout).Int("retry_attempts", rs.Retry.MaxAttempts).
		Dur("retry_min_wait", rs.Retry.MinWait).Dur("retry_max_wait", rs.Retry.MaxWait).Uint32("breaker_threshold", rs.Breaker.Threshold).
		Dur("breaker_open_time", rs.Breaker.OpenTime).Str("breaker_scope", w.cfg.Resilience.BreakerScope).
		Strs("secret_env", w.secrets.Names()).Msg("worker started")
	err = cons.Run(ctx)
	stopBreakers()
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

// setup provisions the streams and buckets and builds the worker's parts. The
// returned watch of the breakers bucket lives until syncCtx ends.
func (w *Worker) setup(ctx, syncCtx context.Context, nc *nats.Conn) (*breakers.Watch, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	buckets, err := provision.Ensure(ctx, js, w.cfg.Provision)
	if err != nil {
		return nil, fmt.Errorf("provision streams and buckets: %w", err)
	}
	events, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", contract.StreamEvents, err)
	}
	execStream, err := js.Stream(ctx, contract.StreamExec)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", contract.StreamExec, err)
	}
	settings, err := w.cfg.Resilience.Settings()
	if err != nil {
		return nil, err
	}
	w.settings = settings
	w.breakers = breakers.New(buckets.Breakers, nc, breakers.Config{
		WorkerID: w.cfg.WorkerID, Scope: w.cfg.Resilience.BreakerScope, Subjects: w.subjects, OpenTime: settings.Breaker.OpenTime,
	}, w.log)
	chain, err := resilience.New(resilience.Options{
		Settings: settings, Transient: nodes.IsTransient, RetryAfter: nodes.RetryAfterOf, OnStateChange: w.breakers.Notify,
	})
	if err != nil {
		return nil, err
	}
	watch, err := w.breakers.Watch(syncCtx, chain.Breakers())
	if err != nil {
		return nil, err
	}
	registry := nodes.NewRegistry()
	registry.Register(nodes.TypeHTTP, nodes.HTTP{Client: &http.Client{}, Secrets: w.secrets})
	registry.Register(nodes.TypeNATSRequest, nodes.NATSRequest{Conn: nc, Secrets: w.secrets})
	w.execStreamTag = strconv.FormatInt(execStream.CachedInfo().Created.Unix(), 36)
	w.js = js
	w.events = events
	w.store = kvstate.New(buckets.State, buckets.Workflows)
	w.pub = publish.New(js, w.subjects)
	w.exec = executor.New(w.store, nil, executor.Config{MaxParallelNodes: w.cfg.MaxParallelNodes, Resilience: chain})
	w.plans = newPlans(w.store, registry)
	return watch, nil
}
