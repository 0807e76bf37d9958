// Command worker runs a flowguard worker. With no NATS URL it starts an embedded
// NATS server with JetStream; see docs/running.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/logging"
	"github.com/flowguard/flowguard/internal/natsconn"
	"github.com/flowguard/flowguard/internal/policy"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/ratelimit"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/risk"
	"github.com/flowguard/flowguard/internal/worker"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "0.0.0-dev"

type cli struct {
	Config kong.ConfigFlag `help:"JSON file of settings; keys are flag names with underscores (\"ack_wait\": \"45s\"). Flags and environment win over it." type:"existingfile" env:"FLOWGUARD_CONFIG"`

	NATS       natsconn.Options `embed:""`
	Listen     string           `help:"Address of the embedded NATS server, used when no --nats-url is given." default:"127.0.0.1:4222" env:"FLOWGUARD_LISTEN"`
	DataDir    string           `help:"Data directory of the embedded NATS server." default:"./data" env:"FLOWGUARD_DATA_DIR" type:"path"`
	SyncAlways bool             `help:"Embedded server: fsync every write before acknowledging it (slower; survives power loss)." env:"FLOWGUARD_SYNC_ALWAYS"`

	ConnectTimeout time.Duration `help:"At start, how long to wait for a NATS server that answers and a ready JetStream (a cluster forming); 0 waits forever." default:"0s" env:"FLOWGUARD_CONNECT_TIMEOUT"`

	WorkerID          string          `help:"Name of this worker in status documents and logs (default: host-pid)." env:"FLOWGUARD_WORKER_ID"`
	Prefix            string          `help:"Subject prefix." default:"flow" env:"FLOWGUARD_PREFIX"`
	Concurrency       int             `help:"Executions run at once by this worker." default:"16" env:"FLOWGUARD_CONCURRENCY"`
	MaxParallelNodes  int             `help:"Nodes of one execution run at once." default:"8" env:"FLOWGUARD_MAX_PARALLEL_NODES"`
	MaxRequestBytes   int             `help:"Larger requests are rejected as oversized." default:"262144" env:"FLOWGUARD_MAX_REQUEST_BYTES"`
	MaxOutputBytes    int             `help:"A node whose JSON outputs are larger fails with bad_response, not retried; an execution's outputs are bounded at 3 times it." default:"262144" env:"FLOWGUARD_MAX_OUTPUT_BYTES"`
	AckWait           time.Duration   `help:"Time without an ack or confirmed heartbeat after which a request is redelivered to another worker: how soon a dead worker's requests are taken over." default:"2s" env:"FLOWGUARD_ACK_WAIT"`
	MaxDeliver        int             `help:"Deliveries of a request before it is dead-lettered." default:"5" env:"FLOWGUARD_MAX_DELIVER"`
	RedeliveryBackoff []time.Duration `help:"Delays between redeliveries after missed acks, e.g. 5s,30s,2m (default: --ack-wait)." env:"FLOWGUARD_REDELIVERY_BACKOFF"`
	ShutdownGrace     time.Duration   `help:"On SIGTERM or SIGINT, time given to in-flight executions before they are handed back." default:"30s" env:"FLOWGUARD_SHUTDOWN_GRACE"`

	HTTPAddr           string        `help:"Address serving /metrics (Prometheus), /healthz and /readyz, e.g. :9090 (default: off)." env:"FLOWGUARD_HTTP_ADDR"`
	EmergencyStaleness time.Duration `help:"Beyond this time without confirming the emergency state, nothing new starts and no order is placed." default:"2s" env:"FLOWGUARD_EMERGENCY_STALENESS"`
	RiskLimits         string        `help:"JSON file of risk limits by scope ({\"global\": [{\"id\": ..., \"type\": ...}]}); they apply beside those in KV." type:"existingfile" env:"FLOWGUARD_RISK_LIMITS"`
	RateLimits         string        `help:"JSON file of providers' rate limits ({\"binance\": {\"budgets\": [{\"name\": \"weight\", \"limit\": 1200, \"window\": \"1m\"}]}}); those in the flow_ratelimits bucket replace them provider by provider." type:"existingfile" env:"FLOWGUARD_RATE_LIMITS"`
	TradingDayReset    string        `help:"Time of day (HH:MM) the trading day, and daily loss, resets." default:"00:00" env:"FLOWGUARD_TRADING_DAY_RESET"`
	TradingDayZone     string        `help:"Time zone of the trading day (IANA name)." default:"UTC" env:"FLOWGUARD_TRADING_DAY_ZONE"`

	Replicas        int           `help:"Replicas of streams and buckets: 1 on one server, 3 in a cluster." default:"1" env:"FLOWGUARD_REPLICAS"`
	DuplicateWindow time.Duration `help:"Requests with the same request_id within this window are stored once." default:"10m" env:"FLOWGUARD_DUPLICATE_WINDOW"`
	EventsMaxAge    time.Duration `help:"How long lifecycle events are kept." default:"168h" env:"FLOWGUARD_EVENTS_MAX_AGE"`
	StateTTL        time.Duration `help:"How long execution state is kept in KV." default:"168h" env:"FLOWGUARD_STATE_TTL"`

	Profile               string        `help:"Resilience profile of provider nodes: development, staging or production; the flags below override its values." default:"development" enum:"development,staging,production" env:"FLOWGUARD_PROFILE"`
	NodeTimeout           time.Duration `help:"Timeout of each node attempt unless the node sets one (default: the profile's, 30s); transform and condition nodes have none." env:"FLOWGUARD_NODE_TIMEOUT"`
	RetryAttempts         int           `help:"Attempts of a provider call, the first included (default: the profile's)." env:"FLOWGUARD_RETRY_ATTEMPTS"`
	RetryMinWait          time.Duration `help:"First, and shortest, wait before a retry (default: the profile's)." env:"FLOWGUARD_RETRY_MIN_WAIT"`
	RetryMaxWait          time.Duration `help:"Longest wait before a retry, unless a provider's Retry-After asks for more (default: the profile's)." env:"FLOWGUARD_RETRY_MAX_WAIT"`
	RetryMultiplier       float64       `help:"Growth of the wait after each retry (default: 2)." env:"FLOWGUARD_RETRY_MULTIPLIER"`
	RetryJitter           *float64      `help:"Randomizes each wait by plus or minus this fraction, 0 to 1 (default: 0.5)." env:"FLOWGUARD_RETRY_JITTER"`
	BreakerThreshold      uint32        `help:"Consecutive failed attempts that open a provider's circuit breaker (default: the profile's)." env:"FLOWGUARD_BREAKER_THRESHOLD"`
	BreakerOpenTime       time.Duration `help:"How long an open breaker fails calls at once before it lets a probe through (default: the profile's)." env:"FLOWGUARD_BREAKER_OPEN_TIME"`
	BreakerScope          string        `help:"local: each worker's breakers are its own; cluster: a breaker that opens on one worker fails fast on every worker." default:"local" enum:"local,cluster" env:"FLOWGUARD_BREAKER_SCOPE"`
	SecretEnv             []string      `help:"Environment variables that workflows may read with env:NAME placeholders, comma separated; NAME@host binds one to a host http nodes may send it to (repeat it per host); their values are redacted everywhere." env:"FLOWGUARD_SECRET_ENV"`
	EgressAllow           []string      `help:"Hosts (api.example.com, *.example.com), addresses and CIDRs http nodes may reach, comma separated; loopback, private and link-local addresses only when listed. Default: none." env:"FLOWGUARD_EGRESS_ALLOW"`
	InlineWorkflows       bool          `help:"Run workflow definitions sent inline in requests; they run with the worker's NATS rights and network reach, for whoever may publish a request. Off by default: only deployed workflows run." negatable:"" env:"FLOWGUARD_INLINE_WORKFLOWS"`
	InlineAllowOrder      bool          `help:"With --inline-workflows: let inline definitions place orders (order nodes, http nodes with side_effect order)." env:"FLOWGUARD_INLINE_ALLOW_ORDER"`
	InlineAllowRiskUpdate bool          `help:"With --inline-workflows: let inline definitions write their bot's risk metrics (risk_update nodes)." env:"FLOWGUARD_INLINE_ALLOW_RISK_UPDATE"`
	InlineAllowSecrets    bool          `help:"With --inline-workflows: let inline definitions read the --secret-env secrets (env:NAME placeholders)." env:"FLOWGUARD_INLINE_ALLOW_SECRETS"`

	Log logging.Options `embed:""`

	Check bool `help:"Check the deployment instead of running: connect, verify the streams, buckets, consumer settings and this user's rights against what this version needs, print what is wrong and how to fix it; exit 1 when something is." env:"FLOWGUARD_CHECK"`
}

func main() {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var c cli
	kong.Parse(&c,
		kong.Name("worker"),
		kong.Description("Runs flowguard workflows from NATS JetStream execution requests."),
		kong.Configuration(configFile),
	)
	worker.SetGCPercent()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(c cli) error {
	log, err := logging.New(c.Log, os.Stderr)
	if err != nil {
		return err
	}
	limits, err := readRiskLimits(c.RiskLimits)
	if err != nil {
		return err
	}
	var rateLimits map[string]contract.RateLimits
	if c.RateLimits != "" {
		if rateLimits, err = ratelimit.Load(c.RateLimits); err != nil {
			return err
		}
	}
	w, err := worker.New(worker.Config{
		NATS: c.NATS, ConnectTimeout: c.ConnectTimeout, Listen: c.Listen, DataDir: c.DataDir, SyncAlways: c.SyncAlways,
		WorkerID: c.WorkerID, Prefix: c.Prefix,
		MaxRequestBytes: c.MaxRequestBytes, MaxParallelNodes: c.MaxParallelNodes, MaxOutputBytes: c.MaxOutputBytes,
		Inline: policy.Inline{
			Enabled: c.InlineWorkflows, Order: c.InlineAllowOrder, RiskUpdate: c.InlineAllowRiskUpdate, Secrets: c.InlineAllowSecrets,
		},
		EmergencyStaleness: c.EmergencyStaleness, RiskLimits: limits, HTTPAddr: c.HTTPAddr, Version: version,
		TradingDayReset: c.TradingDayReset, TradingDayZone: c.TradingDayZone, EgressAllow: c.EgressAllow, RateLimits: rateLimits,
		Consumer: consumer.Config{
			Concurrency: c.Concurrency, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver,
			BackOff: c.RedeliveryBackoff, ShutdownGrace: c.ShutdownGrace,
		},
		Provision: provision.Config{
			Replicas: c.Replicas, DuplicateWindow: c.DuplicateWindow,
			EventsMaxAge: c.EventsMaxAge, StateTTL: c.StateTTL,
		},
		Resilience: worker.ResilienceConfig{
			Profile: c.Profile,
			Overrides: resilience.Settings{
				Timeout: c.NodeTimeout,
				Retry: resilience.RetrySettings{
					MaxAttempts: c.RetryAttempts, MinWait: c.RetryMinWait, MaxWait: c.RetryMaxWait, Multiplier: c.RetryMultiplier,
				},
				Breaker: resilience.BreakerSettings{Threshold: c.BreakerThreshold, OpenTime: c.BreakerOpenTime},
			},
			Jitter: c.RetryJitter, BreakerScope: c.BreakerScope, SecretEnv: c.SecretEnv,
		},
	}, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.Check {
		return w.Check(ctx, os.Stdout)
	}
	go func() {
		<-ctx.Done()
		stop() // a second signal terminates at once
	}()
	return w.Run(ctx)
}

// configFile reads the --config file. Environment variables win over it, and flags
// over both: kong's resolvers alone would let the file win over the environment.
func configFile(r io.Reader) (kong.Resolver, error) {
	file, err := kong.JSON(r)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return kong.ResolverFunc(func(ctx *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
		for _, env := range flag.Tag.Envs {
			if _, set := os.LookupEnv(env); set {
				return nil, nil
			}
		}
		return file.Resolve(ctx, parent, flag)
	}), nil
}

// readRiskLimits reads and checks a file of risk limits by scope.
func readRiskLimits(path string) (map[string][]contract.RiskLimit, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	limits, err := risk.ParseLimitsByScope(data)
	if err != nil {
		return nil, fmt.Errorf("risk limits %s: %w; expected {\"global\": [{\"id\": \"max-loss\", \"type\": \"daily_loss\", \"threshold\": 1000, \"auto_halt\": true}]}", path, err)
	}
	return limits, nil
}
