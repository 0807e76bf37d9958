package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/examples/mockexchange"
	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/embedded"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/worker"
)

// workflows are the three workflows the demo deploys.
//
//go:embed workflows/*.json
var workflows embed.FS

// Options of a demo run.
type Options struct {
	// Short plays every scenario with fewer trades and shorter outages (for tests).
	Short bool
	// NATSURL is a deployment to use, its workers started with workerFlags; empty
	// starts an embedded NATS server and a worker in this process.
	NATSURL string
	// ExchangeURL is a simulated exchange to use (go run ./examples/mockexchange/cmd);
	// empty starts one in this process.
	ExchangeURL string
	// WorkerLog receives the in-process worker's log lines; nil discards them.
	WorkerLog io.Writer
}

// timing is what differs between the full and the short run.
type timing struct {
	normalTrades int
	rounds       int           // trades of each bot and symbol when they run at once
	outage       time.Duration // of the exchange
	breakerOpen  time.Duration // the worker's breaker open time
	pause        time.Duration // between scenarios, to read along
}

func timings(short bool) timing {
	if short {
		return timing{normalTrades: 4, rounds: 3, outage: 1500 * time.Millisecond, breakerOpen: time.Second}
	}
	return timing{normalTrades: 8, rounds: 6, outage: 4 * time.Second, breakerOpen: 2 * time.Second, pause: time.Second}
}

// Settings of the demo's trading.
const (
	dailyLossLimit  = 100.0  // b1's daily loss limit, with auto-halt
	raisedLossLimit = 1000.0 // after the operator's review
	losingDriftBps  = -60    // the market's trend during the losing streak
	maxLosingTrades = 16
)

// workerConfig is the configuration of the demo's worker: quick retries and a
// breaker that opens after 3 failed calls, so that an outage plays out in seconds.
// Workers of a deployment given with --nats-url need the same (see workerFlags).
func workerConfig(natsURL string, t timing) worker.Config {
	jitter := 0.0
	cfg := worker.Config{
		WorkerID: "demo-worker",
		// The simulated exchange listens on loopback, which http nodes reach only when allowed.
		EgressAllow: []string{"127.0.0.1"},
		Consumer:    consumer.Config{Concurrency: 16},
		Resilience: worker.ResilienceConfig{
			Overrides: resilience.Settings{
				Retry:   resilience.RetrySettings{MaxAttempts: 3, MinWait: 100 * time.Millisecond, MaxWait: 400 * time.Millisecond},
				Breaker: resilience.BreakerSettings{Threshold: 3, OpenTime: t.breakerOpen},
			},
			Jitter: &jitter,
		},
	}
	cfg.NATS.URL = natsURL
	return cfg
}

// workerFlags are workerConfig's settings as flags of cmd/worker.
func workerFlags(t timing) string {
	return fmt.Sprintf("--egress-allow 127.0.0.1 --retry-attempts 3 --retry-min-wait 100ms --retry-max-wait 400ms --retry-jitter 0 --breaker-threshold 3 --breaker-open-time %s", t.breakerOpen)
}

// Summary is what a run did.
type Summary struct {
	Executions map[string]int `json:"executions"` // by terminal event type
	// Intents routed (distinct client order ids) and what the exchange saw.
	Intents       int `json:"intents"`
	Orders        int `json:"orders"`
	Resubmissions int `json:"resubmissions"`
	// UnknownOrders are orders at the exchange no intent asked for, and
	// DuplicatedIDs client order ids placed more than once: both must be empty.
	UnknownOrders []string `json:"unknown_orders,omitempty"`
	Retries       int      `json:"retries"`
	FailedFast    int      `json:"failed_fast"`
	BreakerTrips  int      `json:"breaker_trips"`
	BreakerCloses int      `json:"breaker_closes"`
	AutoHalts     int      `json:"auto_halts"`
	Resumes       int      `json:"resumes"`
	// RefusedWhileHalted counts trade executions halted without placing an order.
	RefusedWhileHalted int `json:"refused_while_halted"`
	// TradedAfterResume counts b1's trades completed after the operator's resume.
	TradedAfterResume int     `json:"traded_after_resume"`
	P50MS             float64 `json:"p50_ms"`
	P99MS             float64 `json:"p99_ms"`
}

// Problems lists what the run should have shown and did not.
func (s *Summary) Problems() []string {
	var p []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			p = append(p, fmt.Sprintf(format, args...))
		}
	}
	check(s.Retries > 0, "no retry during the outage")
	check(s.BreakerTrips > 0, "the breaker never opened")
	check(s.FailedFast > 0, "no call failed fast on the open breaker")
	check(s.BreakerCloses > 0, "the breaker never closed again through half-open")
	check(s.AutoHalts == 1, "%d auto-halts, want 1", s.AutoHalts)
	check(s.RefusedWhileHalted > 0, "no order refused while halted")
	check(s.Resumes > 0, "no resume")
	check(s.TradedAfterResume > 0, "no trade after the resume")
	check(s.Orders == s.Intents, "%d orders at the exchange for %d intents", s.Orders, s.Intents)
	check(len(s.UnknownOrders) == 0, "orders no intent asked for: %v", s.UnknownOrders)
	return p
}

// demo is a running demo.
type demo struct {
	opts   Options
	t      timing
	n      *narrator
	nc     *nats.Conn
	js     jetstream.JetStream
	client *client.Client
	watch  *watcher
	router *router
	admin  *http.Client
	exURL  string
	run    string // tag of this run's request ids

	mu        sync.Mutex
	seq       int
	latencies []time.Duration
	// tradedAfterResume counts b1's trades completed after the resume.
	tradedAfterResume int
}

// Run starts what opts does not provide, plays every scenario and returns the summary.
func Run(ctx context.Context, opts Options, out io.Writer) (*Summary, error) {
	t := timings(opts.Short)
	n := &narrator{out: out, start: time.Now()}
	// Deferred calls stop things in the reverse order: the router, then the
	// connection, the worker, NATS and the exchange.
	exURL := opts.ExchangeURL
	if exURL == "" {
		ex, err := mockexchange.Start(mockexchange.Config{WeightLimit: 100000})
		if err != nil {
			return nil, err
		}
		defer ex.Close()
		exURL = ex.URL
		n.say("simulated exchange on %s (seed %d)", exURL, mockexchange.DefaultSeed)
	}
	exURL = strings.TrimSuffix(exURL, "/")

	natsURL := opts.NATSURL
	if natsURL == "" {
		dir, err := os.MkdirTemp("", "flowguard-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		srv, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: -1, StoreDir: dir})
		if err != nil {
			return nil, err
		}
		defer srv.Shutdown()
		natsURL = srv.ClientURL()
		log := zerolog.Nop()
		if opts.WorkerLog != nil {
			log = zerolog.New(opts.WorkerLog).With().Timestamp().Logger().Level(zerolog.WarnLevel)
		}
		w, err := worker.New(workerConfig(natsURL, t), log)
		if err != nil {
			return nil, err
		}
		wctx, stopWorker := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(wctx) }()
		defer func() {
			stopWorker()
			<-errc
		}()
		if err := waitReady(ctx, w, errc); err != nil {
			return nil, err
		}
		n.say("embedded NATS on %s, worker ready (retries: 3 attempts; breaker: opens after 3 failures, probes after %s)", natsURL, t.breakerOpen)
	} else {
		n.say("using the deployment at %s; its workers need: go run ./cmd/worker %s", natsURL, workerFlags(t))
	}

	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
	}
	defer nc.Close()
	cl, err := client.New(nc, "")
	if err != nil {
		return nil, err
	}
	watch, err := newWatcher(nc, cl, n)
	if err != nil {
		return nil, err
	}
	defer watch.stop()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	d := &demo{opts: opts, t: t, n: n, nc: nc, js: js, client: cl, watch: watch, admin: &http.Client{Timeout: 5 * time.Second},
		exURL: exURL, run: strconv.FormatInt(time.Now().Unix()%1e6, 36)}
	if err := d.deploy(ctx); err != nil {
		return nil, err
	}
	if d.router, err = newRouter(nc, cl, watch, n, exURL); err != nil {
		return nil, err
	}
	rctx, stopRouter := context.WithCancel(ctx)
	routerDone := make(chan error, 1)
	go func() { routerDone <- d.router.run(rctx) }()
	defer func() {
		stopRouter()
		<-routerDone
	}()

	for _, scenario := range []func(context.Context) error{d.normal, d.outage, d.losingStreak, d.resume, d.together} {
		if err := scenario(ctx); err != nil {
			return nil, err
		}
		if err := sleep(ctx, t.pause); err != nil {
			return nil, err
		}
	}
	return d.summary(ctx)
}

// waitReady waits until the in-process worker takes requests.
func waitReady(ctx context.Context, w *worker.Worker, errc chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for w.Readiness() != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("worker not ready within 60s: %v", w.Readiness())
		}
		select {
		case err := <-errc:
			return fmt.Errorf("worker stopped: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// deploy stores the three workflows, waiting for the deployment's buckets (a
// worker started at the same time may still be creating them).
func (d *demo) deploy(ctx context.Context) error {
	for _, name := range []string{"trade", "book-fill", "rebalance"} {
		def, err := workflows.ReadFile("workflows/" + name + ".json")
		if err != nil {
			return err
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, version, err := d.client.Deploy(ctx, def)
			if err == nil {
				d.n.say("deployed workflow %s (version %d)", name, version)
				break
			}
			if !errors.Is(err, client.ErrNotProvisioned) || time.Now().After(deadline) {
				return fmt.Errorf("deploy %s: %w", name, err)
			}
			if err := sleep(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// trade runs one trade workflow for bot on symbol and, when it published an
// order, waits until the router placed it and booked the fill. It returns the
// execution's terminal event.
func (d *demo) trade(ctx context.Context, bot, symbol string) (*contract.Event, error) {
	base := strings.TrimSuffix(symbol, mockexchange.QuoteAsset)
	ev, err := d.execute(ctx, "trade", bot, map[string]any{
		"exchange": d.exURL, "symbol": symbol, "base": base, "quantity": quantity(symbol), "max_spread_bps": 5,
	})
	if err != nil {
		return nil, err
	}
	switch ev.Type {
	case contract.ExecutionCompleted:
		o, ok := ev.Outputs["order"].(map[string]any)
		if !ok {
			d.n.say("  · %s %s: spread too wide, no order", bot, ev.ExecutionID)
			return ev, nil
		}
		id, _ := o["client_order_id"].(string)
		if _, err := d.router.waitFill(ctx, id, 60*time.Second); err != nil {
			return nil, err
		}
	case contract.ExecutionHalted:
		d.n.say("  ■ %s %s: halted, no order: %s", bot, ev.ExecutionID, ev.Reason)
	case contract.ExecutionFailed:
		kind := "unknown"
		if ev.Error != nil {
			kind = ev.Error.Kind
		}
		d.n.say("  ✗ %s %s: execution failed (%s), no order", bot, ev.ExecutionID, kind)
	default:
		d.n.say("  ✗ %s %s: %s (%s)", bot, ev.ExecutionID, ev.Type, errText(ev.Error))
	}
	return ev, d.pace(ctx)
}

// pace waits between a bot's trades in the full run, to read along.
func (d *demo) pace(ctx context.Context) error {
	if d.opts.Short {
		return nil
	}
	return sleep(ctx, 300*time.Millisecond)
}

func quantity(symbol string) float64 {
	if symbol == "ETHUSDT" {
		return 1
	}
	return 0.05
}

// execute submits a request and waits for its terminal event, measuring the time.
func (d *demo) execute(ctx context.Context, workflowID, bot string, inputs map[string]any) (*contract.Event, error) {
	d.mu.Lock()
	d.seq++
	id := fmt.Sprintf("%s-%s-%s-%04d", d.run, bot, workflowID, d.seq)
	d.mu.Unlock()
	ch := d.watch.expect(id)
	start := time.Now()
	if _, err := d.client.Submit(ctx, &contract.Request{RequestID: id, WorkflowID: workflowID, BotID: bot, StrategyID: "flatten", Inputs: inputs}); err != nil {
		return nil, err
	}
	ev, err := d.watch.wait(ctx, workflowID, id, ch, 60*time.Second)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.latencies = append(d.latencies, time.Since(start))
	d.mu.Unlock()
	return ev, nil
}

// setFaults changes the exchange's faults through its admin endpoint.
func (d *demo) setFaults(ctx context.Context, f mockexchange.Faults) error {
	body, _ := json.Marshal(f)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, d.exURL+"/admin/faults", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	resp, err := d.admin.Do(req)
	if err != nil {
		return fmt.Errorf("set the exchange's faults: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("set the exchange's faults: HTTP %d: %s", resp.StatusCode, data)
	}
	return nil
}

func (d *demo) exchangeStats(ctx context.Context) (*mockexchange.Stats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.exURL+"/admin/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.admin.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read the exchange's stats: %w", err)
	}
	defer resp.Body.Close()
	var s mockexchange.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("read the exchange's stats: %w", err)
	}
	return &s, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// summary collects the counts, prints them and returns them.
func (d *demo) summary(ctx context.Context) (*Summary, error) {
	st, err := d.exchangeStats(ctx)
	if err != nil {
		return nil, err
	}
	intents := d.router.intentIDs()
	w := d.watch
	w.mu.Lock()
	s := &Summary{Executions: map[string]int{}, Intents: len(intents), Orders: st.Orders, Resubmissions: st.Resubmissions,
		Retries: w.retries, FailedFast: w.fastFail, BreakerTrips: w.trips, BreakerCloses: w.closes,
		AutoHalts: w.halts, Resumes: w.resumes, RefusedWhileHalted: w.refused, TradedAfterResume: d.tradedAfterResume}
	for k, v := range w.outcomes {
		s.Executions[k] = v
	}
	w.mu.Unlock()
	for id := range st.Submissions {
		if !intents[id] {
			s.UnknownOrders = append(s.UnknownOrders, id)
		}
	}
	d.mu.Lock()
	lat := slices.Clone(d.latencies)
	d.mu.Unlock()
	slices.Sort(lat)
	s.P50MS, s.P99MS = pct(lat, 0.5), pct(lat, 0.99)

	d.n.title("Summary")
	out := d.n.out
	fmt.Fprintf(out, "executions:  %d completed, %d failed, %d halted, %d rejected\n", s.Executions[contract.ExecutionCompleted],
		s.Executions[contract.ExecutionFailed], s.Executions[contract.ExecutionHalted], s.Executions[contract.ExecutionRejected])
	fmt.Fprintf(out, "orders:      %d intents, %d orders at the exchange, %d resent and returned as placed, %d unknown\n",
		s.Intents, s.Orders, s.Resubmissions, len(s.UnknownOrders))
	fmt.Fprintf(out, "resilience:  %d retries, breaker opened %d times and closed %d times through half-open, %d calls failed fast\n",
		s.Retries, s.BreakerTrips, s.BreakerCloses, s.FailedFast)
	fmt.Fprintf(out, "risk:        %d auto-halt, %d trades refused while halted, %d resume, %d trades after it\n",
		s.AutoHalts, s.RefusedWhileHalted, s.Resumes, s.TradedAfterResume)
	fmt.Fprintf(out, "latency:     bot request to terminal event, p50 %.1f ms, p99 %.1f ms (%d trade and rebalance executions)\n", s.P50MS, s.P99MS, len(lat))
	return s, nil
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))].Microseconds()) / 1000
}
