// Package worker wires a flowguard worker: it connects to NATS (or starts an
// embedded server), provisions the streams and buckets, and consumes execution
// requests: decode and validate, emergency gate, execute, persist, acknowledge.
package worker

import (
	"context"
	"errors"
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

	"github.com/flowguard/flowguard/internal/breakers"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/embedded"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/execution"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/metrics"
	"github.com/flowguard/flowguard/internal/natsconn"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/publish"
	"github.com/flowguard/flowguard/internal/ratelimit"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/risk"
)

// asyncPublishTimeout bounds the wait for the acknowledgement of a pipelined write.
const asyncPublishTimeout = 10 * time.Second

// outputHeadroom is what a result, status or terminal event holds besides the
// outputs of its execution's nodes.
const outputHeadroom = 64 * 1024

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
	execs         *execution.Store
	pub           *publish.Publisher
	exec          *executor.Executor
	plans         *plans
	ctrl          *emergency.Controller
	risk          *risk.Risk
	metrics       *metrics.Metrics
	nc            *nats.Conn
	consumer      *consumer.Consumer
	secrets       *nodes.Secrets
	settings      resilience.Settings
	breakers      *breakers.Sync
	limiter       *ratelimit.Limiter
	rateWatch     *ratelimit.Watch

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
		metrics:  metrics.New(),
		secrets:  secrets,
	}, nil
}

// Ready reports whether the worker is consuming and knows the current emergency
// state: a worker is not ready before it knows whether trading is halted.
func (w *Worker) Ready() bool { return w.Readiness() == nil }

// Readiness says why the worker is not ready: not started, not connected to NATS,
// consumer not bound, the emergency state not confirmed, or the risk limits not
// loaded.
func (w *Worker) Readiness() error {
	switch {
	case !w.ready.Load():
		return errors.New("starting or stopping")
	case !w.nc.IsConnected():
		return errors.New("not connected to NATS")
	case !w.consumer.Bound():
		return errors.New("request consumer not bound")
	case !w.ctrl.Ready():
		return emergency.ErrStale
	case !w.risk.Ready():
		return risk.ErrRiskUnknown
	}
	return nil
}

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
	// Until the server answers and JetStream is ready, the worker waits, for at
	// most the connect timeout: compose, systemd or Kubernetes may start it first.
	startCtx, startDone := ctx, context.CancelFunc(func() {})
	if w.cfg.ConnectTimeout > 0 {
		startCtx, startDone = context.WithTimeout(ctx, w.cfg.ConnectTimeout)
	}
	defer startDone()
	nc, err := natsconn.Wait(startCtx, w.cfg.NATS, "flowguard-worker "+w.cfg.WorkerID, w.log)
	if err != nil {
		return w.startError(ctx, "connect to NATS", err)
	}
	defer nc.Close()
	// The emergency controller, the risk watch, the breakers' sync and the HTTP
	// endpoints outlive ctx: in-flight executions stay under halt control, and
	// breaker changes are reported, while they finish.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	watch, err := w.setup(startCtx, bgCtx, nc)
	if err != nil {
		return w.startError(ctx, "start", err)
	}
	startDone()
	if err := w.consumer.Bind(ctx); err != nil {
		return err
	}
	svc, err := w.registerService(nc)
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	var httpListener net.Listener
	if w.cfg.HTTPAddr != "" {
		if httpListener, err = net.Listen("tcp", w.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("listen for metrics and health checks on %s: %w; choose another --http-addr", w.cfg.HTTPAddr, err)
		}
	}

	var background sync.WaitGroup
	goBackground := func(run func(context.Context)) {
		background.Add(1)
		go func() { defer background.Done(); run(bgCtx) }()
	}
	goBackground(func(ctx context.Context) { w.breakers.Run(ctx, watch) })
	goBackground(func(ctx context.Context) { w.limiter.Run(ctx, w.rateWatch) })
	goBackground(w.ctrl.Run)
	goBackground(w.risk.Run)
	if httpListener != nil {
		goBackground(func(ctx context.Context) {
			if err := w.metrics.Serve(ctx, httpListener, w.Readiness); err != nil {
				w.log.Error().Err(err).Msg("metrics and health endpoints stopped")
			}
		})
	}
	defer func() { stopBackground(); background.Wait() }()
	w.awaitEmergencyState(ctx)

	w.ready.Store(true)
	defer w.ready.Store(false)
	rs := w.settings
	w.log.Info().Str("nats", nc.ConnectedUrlRedacted()).Int("concurrency", w.cfg.Consumer.Concurrency).Dur("ack_wait", w.cfg.Consumer.AckWait).Int("max_output_bytes", w.cfg.MaxOutputBytes).
		Str("http", w.cfg.HTTPAddr).Str("version", w.cfg.Version).
		Str("profile", w.cfg.Resilience.Profile).Dur("node_timeout", rs.Timeout).Int("retry_attempts", rs.Retry.MaxAttempts).
		Dur("retry_min_wait", rs.Retry.MinWait).Dur("retry_max_wait", rs.Retry.MaxWait).Uint32("breaker_threshold", rs.Breaker.Threshold).
		Dur("breaker_open_time", rs.Breaker.OpenTime).Str("breaker_scope", w.cfg.Resilience.BreakerScope).
		Strs("secret_env", w.secrets.Names()).Strs("egress_allow", w.cfg.EgressAllow).Bool("inline_workflows", w.cfg.Inline.Enabled).
		Bool("inline_allow_order", w.cfg.Inline.Order).Bool("inline_allow_risk_update", w.cfg.Inline.RiskUpdate).
		Bool("inline_allow_secrets", w.cfg.Inline.Secrets).Msg("worker started")
	firings := w.runSchedules(ctx)
	w.consumer.Run(ctx)
	<-firings
	if derr := nc.Drain(); derr != nil && derr != nats.ErrConnectionClosed {
		w.log.Warn().Err(derr).Msg("drain connection")
	}
	w.log.Info().Msg("worker stopped")
	return nil
}

// waitLogInterval is how often a worker waiting at start says what it waits for.
const waitLogInterval = 5 * time.Second

// ErrConnectTimeout is matched by the error of a worker that found no ready NATS
// server within its connect timeout.
var ErrConnectTimeout = errors.New("no ready NATS server within the connect timeout")

// startError explains a failed start: ctx ended (a signal: no error), the connect
// timeout passed, or err itself.
func (w *Worker) startError(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		w.log.Info().Msg("stopped before starting")
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (%s at %s): %w; start the server or check --nats-url, or raise --connect-timeout (0 waits forever)",
			ErrConnectTimeout, w.cfg.ConnectTimeout, w.cfg.NATS.URL, err)
	}
	return fmt.Errorf("%s: %w", what, err)
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
// returned watch of the breakers bucket lives until bgCtx ends.
func (w *Worker) setup(ctx, bgCtx context.Context, nc *nats.Conn) (*breakers.Watch, error) {
	// Async publishes (an execution's pipelined writes) fail rather than wait
	// forever for an acknowledgement lost in a reconnect.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(asyncPublishTimeout))
	if err != nil {
		return nil, err
	}
	// A cluster that is forming, or electing a leader, does not answer yet.
	var buckets *provision.Buckets
	var logged time.Duration
	err = resilience.WaitIO(ctx, provision.Unavailable, func(err error, waited time.Duration) {
		if logged == 0 || waited-logged >= waitLogInterval {
			logged = max(waited, time.Nanosecond)
			w.log.Warn().Err(err).Dur("waited", waited.Round(time.Second)).Msg("waiting for JetStream: in a cluster, a majority of the servers must be up and elect a leader")
		}
	}, func(ctx context.Context) error {
		var err error
		buckets, err = provision.Ensure(ctx, js, w.cfg.Provision)
		return err
	})
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
	if w.rateWatch, err = w.setupRateLimits(bgCtx, nc, buckets.RateLimits); err != nil {
		return nil, err
	}
	chain, err := resilience.New(resilience.Options{
		Settings: settings, Limiter: w.limiter, Transient: nodes.IsTransient, RetryAfter: nodes.RetryAfterOf, Unrepeatable: nodes.IsUnrepeatable,
		OnStateChange: func(c resilience.StateChange) {
			w.breakers.Notify(c)
			w.metrics.BreakerState(c.Provider, breakerLevel[c.To])
		},
	})
	if err != nil {
		return nil, err
	}
	watch, err := w.breakers.Watch(bgCtx, chain.Breakers())
	if err != nil {
		return nil, err
	}
	registry := nodes.NewRegistry()
	registry.Register(nodes.TypeNATSRequest, nodes.NATSRequest{Conn: nc, Secrets: w.secrets, Prefix: w.cfg.Prefix})
	w.execStreamTag = strconv.FormatInt(execStream.CachedInfo().Created.Unix(), 36)
	w.nc = nc
	w.js = js
	w.events = events
	w.store = kvstate.New(buckets.State, buckets.Workflows)
	var execOpts []execution.Option
	if w.cfg.RoundTrips != nil {
		execOpts = append(execOpts, execution.WithObserver(w.cfg.RoundTrips))
	}
	w.execs = execution.New(js, w.store, buckets.State.Bucket(), w.subjects, execOpts...)
	w.pub = publish.New(js, w.subjects)
	w.ctrl = emergency.New(js, emergency.Config{Subjects: w.subjects, Staleness: w.cfg.EmergencyStaleness}, w.log)
	w.risk, err = risk.NewRisk(buckets.Risk, w.ctrl, w.pub, risk.RiskConfig{
		Subjects: w.subjects, Day: w.cfg.tradingDay, Limits: w.cfg.RiskLimits, IssuedBy: "flowguard-risk@" + w.cfg.WorkerID,
	}, w.log)
	if err != nil {
		return nil, err
	}
	orders := desk{ctrl: w.ctrl, risk: w.risk, pub: w.pub, duplicateWindow: w.cfg.Provision.DuplicateWindow}
	registry.Register(nodes.TypeOrder, nodes.Order{Desk: orders})
	// Each execution may run several nodes at once, all to the same provider.
	idlePerHost := w.cfg.Consumer.Concurrency * max(w.cfg.MaxParallelNodes, 1)
	registry.Register(nodes.TypeHTTP, nodes.HTTP{Client: w.cfg.egress.Client(idlePerHost), Secrets: w.secrets, Desk: orders})
	registry.Register(nodes.TypeRiskUpdate, nodes.RiskUpdate{Metrics: w.risk})
	w.ctrl.OnChange(func(st emergency.ScopeState) { w.metrics.EmergencyState(st.Scope, emergencyLevel[st.State]) })
	w.exec = executor.New(guard{ctrl: w.ctrl}, executor.Config{
		MaxParallelNodes: w.cfg.MaxParallelNodes, MaxOutputBytes: w.cfg.MaxOutputBytes, Observer: w.metrics, Resilience: chain,
	})
	if max := int64(executor.ExecutionOutputFactor*w.cfg.MaxOutputBytes) + outputHeadroom; max > nc.MaxPayload() {
		return nil, fmt.Errorf("--max-output-bytes %d is too large for the server's max payload (%d bytes): an execution's outputs (up to %d times it) must fit in one message; lower --max-output-bytes below %d",
			w.cfg.MaxOutputBytes, nc.MaxPayload(), executor.ExecutionOutputFactor, (nc.MaxPayload()-outputHeadroom)/executor.ExecutionOutputFactor)
	}
	w.plans = newPlans(w.store, registry, w.cfg.RoundTrips, w.cfg.Inline)
	if err := w.plans.watch(bgCtx, buckets.Workflows); err != nil {
		return nil, err
	}
	w.consumer, err = consumer.New(js, w.cfg.Consumer, w.handle, w.log, consumer.WithGate(w.canStart))
	return watch, err
}

// Scope and breaker states as metric values.
var (
	emergencyLevel = map[string]int{emergency.Active: 0, emergency.Paused: 1, emergency.Halted: 2}
	breakerLevel   = map[resilience.State]int{resilience.StateClosed: 0, resilience.StateHalfOpen: 1, resilience.StateOpen: 2}
)

// awaitEmergencyState waits until the emergency state is loaded: a worker started
// during a halt must never run anything.
func (w *Worker) awaitEmergencyState(ctx context.Context) {
	logEvery := time.NewTicker(5 * time.Second)
	defer logEvery.Stop()
	for {
		changed := w.ctrl.Changed()
		if w.ctrl.Ready() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-logEvery.C:
			w.log.Warn().Msg("waiting for the emergency state before taking requests")
		}
	}
}

// canStart gates fetching: while the emergency state is unconfirmed or the risk
// limits are not loaded, requests stay in the stream.
func (w *Worker) canStart() error {
	switch {
	case !w.ctrl.Ready():
		return emergency.ErrStale
	case !w.risk.Ready():
		return risk.ErrRiskUnknown
	}
	return nil
}
