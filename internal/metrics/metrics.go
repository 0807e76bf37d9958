// Package metrics measures a worker: Prometheus metrics, the counts its NATS micro
// service reports, and the HTTP endpoints /metrics, /healthz and /readyz.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Execution outcomes, as labels.
const (
	OutcomeCompleted  = "completed"
	OutcomeFailed     = "failed"
	OutcomeHalted     = "halted"
	OutcomeRejected   = "rejected"
	OutcomeHandedBack = "handed_back"
	OutcomeDuplicate  = "duplicate"
)

// Metrics of one worker. Its methods are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	executions        *prometheus.CounterVec
	executionDuration *prometheus.HistogramVec
	nodeDuration      *prometheus.HistogramVec
	retries           *prometheus.CounterVec
	breakerState      *prometheus.GaugeVec
	emergencyState    *prometheus.GaugeVec
	inFlight          prometheus.Gauge
	redelivered       prometheus.Counter
	deadLettered      *prometheus.CounterVec
	rate              rateLimits

	counts struct {
		inFlight, completed, failed, halted, rejected, handedBack, redelivered, deadLettered atomic.Int64
	}
}

// New returns metrics registered in a registry of their own (with Go and process
// collectors), so that several workers in one process do not collide.
func New() *Metrics {
	m := &Metrics{registry: prometheus.NewRegistry()}
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m.executions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_executions_total", Help: "Requests ended, by outcome (completed, failed, halted, rejected, handed_back, duplicate).",
	}, []string{"outcome"})
	m.executionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "flowguard_execution_duration_seconds", Help: "Duration of executions, from claim to terminal state, by outcome.", Buckets: latency,
	}, []string{"outcome"})
	m.nodeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "flowguard_node_duration_seconds", Help: "Duration of nodes, all attempts included, by node type and outcome.", Buckets: latency,
	}, []string{"node_type", "outcome"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_node_retries_total", Help: "Retried node attempts, by node type.",
	}, []string{"node_type"})
	m.breakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowguard_breaker_state", Help: "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
	}, []string{"provider"})
	m.emergencyState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowguard_emergency_state", Help: "Emergency state per scope: 0 active, 1 paused, 2 halted.",
	}, []string{"scope"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flowguard_executions_in_flight", Help: "Executions running on this worker.",
	})
	m.redelivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowguard_requests_redelivered_total", Help: "Requests received again after an earlier delivery (a worker died, a nak, an expired ack wait).",
	})
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_requests_dead_lettered_total", Help: "Requests sent to the dead-letter stream, by error kind.",
	}, []string{"kind"})
	m.registry.MustRegister(m.executions, m.executionDuration, m.nodeDuration, m.retries, m.breakerState,
		m.emergencyState, m.inFlight, m.redelivered, m.deadLettered,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.rate = newRateLimits()
	m.registry.MustRegister(m.rate.collectors()...)
	return m
}

// ExecutionStarted counts an execution in flight until ExecutionEnded.
func (m *Metrics) ExecutionStarted() {
	m.inFlight.Inc()
	m.counts.inFlight.Add(1)
}

// ExecutionEnded records how an execution started with ExecutionStarted ended.
func (m *Metrics) ExecutionEnded(outcome string, d time.Duration) {
	m.inFlight.Dec()
	m.counts.inFlight.Add(-1)
	m.Ended(outcome)
	m.executionDuration.WithLabelValues(outcome).Observe(d.Seconds())
}

// Ended counts a request that ended with outcome (rejected requests never start).
func (m *Metrics) Ended(outcome string) {
	m.executions.WithLabelValues(outcome).Inc()
	switch outcome {
	case OutcomeCompleted:
		m.counts.completed.Add(1)
	case OutcomeFailed:
		m.counts.failed.Add(1)
	case OutcomeHalted:
		m.counts.halted.Add(1)
	case OutcomeRejected:
		m.counts.rejected.Add(1)
	case OutcomeHandedBack:
		m.counts.handedBack.Add(1)
	}
}

// NodeFinished records a node's duration (all attempts) and outcome.
func (m *Metrics) NodeFinished(nodeType, outcome string, d time.Duration) {
	m.nodeDuration.WithLabelValues(nodeType, outcome).Observe(d.Seconds())
}

// NodeRetried counts a retried attempt.
func (m *Metrics) NodeRetried(nodeType string) { m.retries.WithLabelValues(nodeType).Inc() }

// BreakerState records a provider's breaker state: 0 closed, 1 half-open, 2 open.
func (m *Metrics) BreakerState(provider string, state int) {
	m.breakerState.WithLabelValues(provider).Set(float64(state))
}

// EmergencyState records a scope's state: 0 active, 1 paused, 2 halted.
func (m *Metrics) EmergencyState(scope string, state int) {
	m.emergencyState.WithLabelValues(scope).Set(float64(state))
}

// Redelivered counts a request received again.
func (m *Metrics) Redelivered() {
	m.redelivered.Inc()
	m.counts.redelivered.Add(1)
}

// DeadLettered counts a request sent to the dead-letter stream.
func (m *Metrics) DeadLettered(kind string) {
	m.deadLettered.WithLabelValues(kind).Inc()
	m.counts.deadLettered.Add(1)
}

// Counts is what the worker's micro service reports in its stats.
type Counts struct {
	InFlight     int64 `json:"in_flight"`
	Completed    int64 `json:"completed"`
	Failed       int64 `json:"failed"`
	Halted       int64 `json:"halted"`
	Rejected     int64 `json:"rejected"`
	HandedBack   int64 `json:"handed_back"`
	Redelivered  int64 `json:"redelivered"`
	DeadLettered int64 `json:"dead_lettered"`
}

// Counts returns the counters since the worker started.
func (m *Metrics) Counts() Counts {
	c := &m.counts
	return Counts{
		InFlight: c.inFlight.Load(), Completed: c.completed.Load(), Failed: c.failed.Load(), Halted: c.halted.Load(),
		Rejected: c.rejected.Load(), HandedBack: c.handedBack.Load(), Redelivered: c.redelivered.Load(), DeadLettered: c.deadLettered.Load(),
	}
}

// Serve answers /metrics, /healthz (the process is alive) and /readyz (ready
// returns nil) on l until ctx ends.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, ready func() error) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
