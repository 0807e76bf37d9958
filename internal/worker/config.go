package worker

import (
	"fmt"
	"os"
	"time"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/execution"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/natsconn"
	"github.com/flowguard/flowguard/internal/policy"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/risk"
)

// Defaults of Config.
const (
	DefaultListen          = "127.0.0.1:4222"
	DefaultDataDir         = "./data"
	DefaultMaxRequestBytes = 256 * 1024
)

// Config of a worker. The zero value of every field means its default.
type Config struct {
	// NATS is where and as whom to connect; with no URL the worker starts an
	// embedded server on Listen, with its data in DataDir.
	NATS       natsconn.Options
	Listen     string
	DataDir    string
	SyncAlways bool

	// WorkerID names this worker in status documents and logs; default host-pid.
	WorkerID string
	Prefix   string

	// ConnectTimeout bounds the wait at start for a NATS server that answers and a
	// JetStream that is ready (a cluster forming); 0 waits forever.
	ConnectTimeout time.Duration

	Consumer  consumer.Config
	Provision provision.Config

	// EmergencyStaleness bounds how long the emergency state is trusted unconfirmed;
	// beyond it nothing new starts and no order is placed.
	EmergencyStaleness time.Duration
	// Risk limits from configuration and the trading day of daily loss limits.
	RiskLimits      map[string][]contract.RiskLimit
	TradingDayReset string
	TradingDayZone  string
	tradingDay      risk.TradingDay

	// HTTPAddr, when set, serves /metrics, /healthz and /readyz.
	HTTPAddr string
	// Version is reported by the worker's NATS micro service.
	Version string

	// MaxRequestBytes rejects larger requests as oversized.
	MaxRequestBytes int
	// MaxParallelNodes bounds the nodes of one execution that run at once.
	MaxParallelNodes int
	// MaxOutputBytes bounds each node's JSON outputs, and an execution's at
	// executor.ExecutionOutputFactor times it; a node over it fails bad_response.
	MaxOutputBytes int
	// Inline says whether requests may carry their workflow definition, and what
	// such a definition may do; the zero value refuses them (invalid_request): only
	// deployed workflows run.
	Inline policy.Inline

	Resilience ResilienceConfig
	// RateLimits are providers' budgets, by provider (--rate-limits); those in
	// the flow_ratelimits bucket replace them provider by provider.
	RateLimits map[string]contract.RateLimits

	// EgressAllow lists the hosts, addresses and CIDRs http nodes may reach (see
	// policy.Egress); empty, http nodes reach nothing.
	EgressAllow []string
	egress      *policy.Egress

	// RoundTrips, when set, is told of each round trip an execution waits for,
	// one after another (see execution.Observer), and of each read of a workflow
	// definition: for tests and benchmarks.
	RoundTrips execution.Observer
}

// ResilienceConfig tunes the calls of provider nodes (see docs/contract.md, Resilience profiles).
type ResilienceConfig struct {
	// Profile names the defaults: development (the default), staging or production.
	Profile string
	// Overrides replace the profile's values where they are not zero (Jitter aside).
	Overrides resilience.Settings
	// Jitter randomizes retry waits by ± this fraction; nil means resilience.DefaultJitter.
	Jitter *float64
	// BreakerScope is local (the default: each worker's breakers are its own) or
	// cluster (a breaker opening on one worker fails fast on every worker).
	BreakerScope string
	// SecretEnv lists the environment variables workflows may read as ${env:NAME},
	// each as NAME@host once per host an http node may send it to (see nodes.Secrets).
	SecretEnv []string
}

// Settings returns the profile's settings with the overrides applied, checked.
func (r *ResilienceConfig) Settings() (resilience.Settings, error) {
	s, err := resilience.Profile(r.Profile)
	if err != nil {
		return s, err
	}
	s = s.Override(r.Overrides)
	if r.Jitter != nil {
		s.Retry.Jitter = *r.Jitter
	}
	return s, s.Validate()
}

// Validate fills defaults and checks every value; its errors say which setting is wrong.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Prefix == "" {
		c.Prefix = contract.DefaultPrefix
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("connect timeout must not be negative (0 waits forever), got %s", c.ConnectTimeout)
	}
	if err := contract.CheckID("prefix", c.Prefix); err != nil {
		return err
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		c.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Version == "" {
		c.Version = "0.0.0-dev"
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxRequestBytes < 1024 {
		return fmt.Errorf("max request size must be at least 1024 bytes, got %d", c.MaxRequestBytes)
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = executor.DefaultMaxOutputBytes
	}
	if c.MaxOutputBytes < 1024 {
		return fmt.Errorf("max output size must be at least 1024 bytes, got %d", c.MaxOutputBytes)
	}
	if c.MaxParallelNodes < 0 {
		return fmt.Errorf("max parallel nodes must not be negative, got %d", c.MaxParallelNodes)
	}
	if err := c.Inline.Validate(); err != nil {
		return err
	}
	egress, err := policy.ParseEgress(c.EgressAllow)
	if err != nil {
		return err
	}
	c.egress = egress
	if c.EmergencyStaleness == 0 {
		c.EmergencyStaleness = emergency.DefaultStaleness
	}
	if c.EmergencyStaleness < 100*time.Millisecond {
		return fmt.Errorf("emergency staleness must be at least 100ms, got %s", c.EmergencyStaleness)
	}
	if c.TradingDayReset == "" {
		c.TradingDayReset = "00:00"
	}
	if c.TradingDayZone == "" {
		c.TradingDayZone = "UTC"
	}
	day, err := risk.ParseTradingDay(c.TradingDayReset, c.TradingDayZone)
	if err != nil {
		return err
	}
	c.tradingDay = day
	if c.Resilience.Profile == "" {
		c.Resilience.Profile = resilience.Development
	}
	if _, err := c.Resilience.Settings(); err != nil {
		return err
	}
	if c.Resilience.BreakerScope == "" {
		c.Resilience.BreakerScope = contract.BreakerScopeLocal
	}
	if s := c.Resilience.BreakerScope; s != contract.BreakerScopeLocal && s != contract.BreakerScopeCluster {
		return fmt.Errorf("breaker scope must be %s or %s, got %q", contract.BreakerScopeLocal, contract.BreakerScopeCluster, s)
	}
	subjects := contract.Subjects{Prefix: c.Prefix}
	c.Provision.Subjects = subjects
	if err := c.Provision.Validate(); err != nil {
		return err
	}
	c.Consumer.Stream = contract.StreamExec
	c.Consumer.FilterSubject = subjects.ExecAll()
	if err := c.Consumer.Validate(); err != nil {
		return err
	}

	return c.NATS.Validate()
}
