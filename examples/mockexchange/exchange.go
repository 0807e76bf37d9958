// Package mockexchange is a simulated spot exchange for demos, tests and
// benchmarks: REST endpoints shaped like a real exchange's (ticker, order book top,
// place order idempotent by client order id, open orders, balances), request
// weights with usage headers and HTTP 429 with Retry-After over budget, injected
// faults (added latency, a 5xx rate, a full outage, slow answers), and a seeded
// random-walk price, so that the same sequence of requests sees the same prices.
//
// Use it as a library (New, then serve Handler, or Start on a loopback port) or run
// it with go run ./examples/mockexchange/cmd. See docs/demo.md.
package mockexchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultSeed        = 42
	DefaultWeightLimit = 1200
	DefaultWindow      = time.Minute
	DefaultSpreadBps   = 2
	DefaultVolBps      = 5
	// DefaultAccount is the account of requests without an X-API-KEY header.
	DefaultAccount = "default"
	// QuoteAsset is the asset every symbol is priced in.
	QuoteAsset = "USDT"
)

// Errors of the configuration.
var ErrInvalidConfig = errors.New("mockexchange: invalid configuration")

// Config of an exchange. The zero value of every field means its default.
type Config struct {
	// Seed of the price walk and of the 5xx draws: the same seed and the same
	// sequence of requests give the same prices and the same faults.
	Seed uint64
	// Prices are the symbols traded and their starting mid prices; default
	// BTCUSDT 65000 and ETHUSDT 3200. Every symbol ends with USDT.
	Prices map[string]float64
	// Balances every account starts with; default 100000 USDT.
	Balances map[string]float64
	// SpreadBps is the spread between bid and ask, in basis points of the mid.
	SpreadBps float64
	// VolBps is the standard deviation of one step of the walk, in basis points.
	VolBps float64
	// WeightLimit is each account's budget of request weight per Window.
	WeightLimit int
	Window      time.Duration
	// Faults injected from the start.
	Faults Faults
	// Now is the clock of weight windows and outages; default time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if len(c.Prices) == 0 {
		c.Prices = map[string]float64{"BTCUSDT": 65000, "ETHUSDT": 3200}
	}
	for s, p := range c.Prices {
		if !strings.HasSuffix(s, QuoteAsset) || len(s) == len(QuoteAsset) || p <= 0 {
			return fmt.Errorf("%w: symbol %q at %g: symbols end with %s and prices are positive", ErrInvalidConfig, s, p, QuoteAsset)
		}
	}
	if c.Balances == nil {
		c.Balances = map[string]float64{QuoteAsset: 100000}
	}
	if c.SpreadBps == 0 {
		c.SpreadBps = DefaultSpreadBps
	}
	if c.VolBps == 0 {
		c.VolBps = DefaultVolBps
	}
	if c.WeightLimit == 0 {
		c.WeightLimit = DefaultWeightLimit
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.SpreadBps < 0 || c.VolBps < 0 || c.WeightLimit < 0 || c.Window < 0 {
		return fmt.Errorf("%w: spread, volatility, weight limit and window must not be negative", ErrInvalidConfig)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c.Faults.validate()
}

// Exchange is a simulated exchange; it is safe for concurrent use.
type Exchange struct {
	cfg Config

	mu       sync.Mutex
	rng      *rand.Rand // 5xx and slow draws
	markets  map[string]*market
	accounts map[string]*account
	orders   map[string]*Order // by client order id
	nextID   int64
	faults   Faults
	outage   time.Time // answer 503 until then
	stats    Stats
}

// New returns an exchange; its errors say which setting is wrong.
func New(cfg Config) (*Exchange, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Exchange{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 1)), markets: map[string]*market{},
		accounts: map[string]*account{}, orders: map[string]*Order{}, faults: cfg.Faults,
		stats: Stats{Requests: map[string]int{}, Submissions: map[string]int{}}}
	symbols := make([]string, 0, len(cfg.Prices))
	for s := range cfg.Prices {
		symbols = append(symbols, s)
	}
	sort.Strings(symbols)
	for i, s := range symbols {
		e.markets[s] = &market{mid: cfg.Prices[s], rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+2))}
	}
	if cfg.Faults.OutageFor > 0 {
		e.outage = cfg.Now().Add(cfg.Faults.OutageFor)
	}
	return e, nil
}

// Server is an exchange served on a loopback port.
type Server struct {
	*Exchange
	srv *httptest.Server
	// URL is the base URL, http://127.0.0.1:PORT.
	URL string
}

// Start serves a new exchange on a free loopback port until Close.
func Start(cfg Config) (*Server, error) {
	e, err := New(cfg)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(e.Handler())
	return &Server{Exchange: e, srv: srv, URL: srv.URL}, nil
}

// Close stops serving and waits for the requests in progress.
func (s *Server) Close() { s.srv.Close() }

// Handler serves the exchange's API and its admin endpoints:
//
//	GET  /api/v3/ticker/price?symbol=S      weight 1   {"symbol", "price"}
//	GET  /api/v3/ticker/bookTicker?symbol=S weight 2   {"symbol", "bidPrice", "bidQty", "askPrice", "askQty"}
//	POST /api/v3/order                      weight 1   place an order (see PlaceOrder)
//	GET  /api/v3/openOrders[?symbol=S]      weight 3   resting limit orders of the account
//	GET  /api/v3/account                    weight 10  {"balances": [{"asset", "free", "locked"}]}
//	GET  /admin/stats                                  Stats
//	GET  /admin/faults, PUT /admin/faults              the faults injected (Faults)
//
// The account is the X-API-KEY header (default "default"). Every API answer
// carries X-Used-Weight and X-Weight-Limit; over the budget the answer is 429
// with Retry-After (seconds to the next window). Admin endpoints have no weight
// and no faults.
func (e *Exchange) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /api/v3/ticker/price", e.api("ticker", 1, e.handleTicker))
	mux.Handle("GET /api/v3/ticker/bookTicker", e.api("book", 2, e.handleBook))
	mux.Handle("POST /api/v3/order", e.api("order", 1, e.handleOrder))
	mux.Handle("GET /api/v3/openOrders", e.api("open_orders", 3, e.handleOpenOrders))
	mux.Handle("GET /api/v3/account", e.api("account", 10, e.handleAccount))
	mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, e.Stats()) })
	mux.HandleFunc("GET /admin/faults", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, e.Faults()) })
	mux.HandleFunc("PUT /admin/faults", e.handleSetFaults)
	return mux
}

// apiError is the body of every error answer.
type apiError struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status, code int, format string, args ...any) {
	writeJSON(w, status, apiError{Code: code, Msg: fmt.Sprintf(format, args...)})
}

// api wraps an endpoint with its weight and the injected faults, outer to inner:
// outage (503), weight budget (429), 5xx rate (500), added latency, slow answers.
func (e *Exchange) api(name string, weight int, h func(w http.ResponseWriter, r *http.Request, acct string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acct := r.Header.Get("X-API-KEY")
		if acct == "" {
			acct = DefaultAccount
		}
		v := e.admit(name, weight, acct)
		if v.outage {
			writeError(w, http.StatusServiceUnavailable, -1001, "service unavailable: simulated outage, back in %s", v.outageLeft.Round(time.Millisecond))
			return
		}
		w.Header().Set("X-Used-Weight", fmt.Sprint(v.used))
		w.Header().Set("X-Weight-Limit", fmt.Sprint(e.cfg.WeightLimit))
		if v.retryAfter > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(v.retryAfter.Seconds()))))
			writeError(w, http.StatusTooManyRequests, -1003, "too much request weight used: %d of %d per %s; retry after the Retry-After seconds", v.used, e.cfg.WeightLimit, e.cfg.Window)
			return
		}
		if v.fail {
			writeError(w, http.StatusInternalServerError, -1000, "internal error (injected); nothing was done, retry")
			return
		}
		if !pause(r, v.delay) {
			return // the client gave up
		}
		h(w, r, acct)
	})
}

// verdict is what the faults and the budget decide for one request.
type verdict struct {
	outage     bool
	outageLeft time.Duration
	used       int
	retryAfter time.Duration
	fail       bool
	delay      time.Duration
}

// admit counts a request and decides its faults, under the lock so that the draws
// follow the order of requests.
func (e *Exchange) admit(name string, weight int, acct string) verdict {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	e.stats.Requests[name]++
	if now.Before(e.outage) {
		e.stats.Outage++
		return verdict{outage: true, outageLeft: e.outage.Sub(now)}
	}
	a := e.account(acct)
	if now.Sub(a.windowStart) >= e.cfg.Window {
		a.windowStart = now.Truncate(e.cfg.Window)
		a.used = 0
	}
	if a.used+weight > e.cfg.WeightLimit {
		e.stats.RateLimited++
		return verdict{used: a.used, retryAfter: a.windowStart.Add(e.cfg.Window).Sub(now)}
	}
	a.used += weight
	v := verdict{used: a.used, delay: e.faults.Latency}
	if e.faults.ErrorRate > 0 && e.rng.Float64() < e.faults.ErrorRate {
		e.stats.Errors++
		v.fail = true
	}
	if e.faults.SlowRate > 0 && e.rng.Float64() < e.faults.SlowRate {
		e.stats.Slow++
		v.delay += e.faults.SlowDelay
	}
	return v
}

// pause waits d unless the client goes away first; it reports whether to answer.
func pause(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Faults are the faults injected into API requests.
type Faults struct {
	// Latency is added to every answer.
	Latency time.Duration `json:"latency"`
	// ErrorRate is the share of requests answered 500 without doing anything.
	ErrorRate float64 `json:"error_rate"`
	// SlowRate is the share of answers delayed by SlowDelay more (past a
	// client's timeout, say).
	SlowRate  float64       `json:"slow_rate"`
	SlowDelay time.Duration `json:"slow_delay"`
	// OutageFor, when set, answers every request 503 for this long from now.
	OutageFor time.Duration `json:"outage_for,omitempty"`
	// OutageUntil is when the current outage ends (read only).
	OutageUntil *time.Time `json:"outage_until,omitempty"`
	// DriftBps moves the walk's mid by this many basis points at every step: a
	// trend (negative: a falling market).
	DriftBps float64 `json:"drift_bps"`
}

func (f *Faults) validate() error {
	if f.ErrorRate < 0 || f.ErrorRate > 1 || f.SlowRate < 0 || f.SlowRate > 1 {
		return fmt.Errorf("%w: error_rate and slow_rate are shares between 0 and 1, got %g and %g", ErrInvalidConfig, f.ErrorRate, f.SlowRate)
	}
	if f.Latency < 0 || f.SlowDelay < 0 || f.OutageFor < 0 {
		return fmt.Errorf("%w: latency, slow_delay and outage_for must not be negative", ErrInvalidConfig)
	}
	if math.Abs(f.DriftBps) >= 10000 {
		return fmt.Errorf("%w: drift_bps must be within ±10000, got %g", ErrInvalidConfig, f.DriftBps)
	}
	return nil
}

// MarshalJSON writes durations as Go duration strings ("250ms").
func (f Faults) MarshalJSON() ([]byte, error) {
	type plain Faults
	return json.Marshal(struct {
		plain
		Latency   string `json:"latency"`
		SlowDelay string `json:"slow_delay"`
		OutageFor string `json:"outage_for,omitempty"`
	}{plain: plain(f), Latency: f.Latency.String(), SlowDelay: f.SlowDelay.String(), OutageFor: durationOrEmpty(f.OutageFor)})
}

// UnmarshalJSON reads durations as Go duration strings ("250ms", "3s").
func (f *Faults) UnmarshalJSON(data []byte) error {
	type plain Faults
	var v struct {
		plain
		Latency   string `json:"latency"`
		SlowDelay string `json:"slow_delay"`
		OutageFor string `json:"outage_for"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*f = Faults(v.plain)
	for _, d := range []struct {
		name string
		s    string
		to   *time.Duration
	}{{"latency", v.Latency, &f.Latency}, {"slow_delay", v.SlowDelay, &f.SlowDelay}, {"outage_for", v.OutageFor, &f.OutageFor}} {
		if d.s == "" {
			continue
		}
		parsed, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("%s: %w (write a Go duration such as \"250ms\" or \"3s\")", d.name, err)
		}
		*d.to = parsed
	}
	return nil
}

func durationOrEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// SetFaults replaces the faults injected; an OutageFor starts an outage now.
func (e *Exchange) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.OutageFor > 0 {
		e.outage = e.cfg.Now().Add(f.OutageFor)
	}
	f.OutageFor, f.OutageUntil = 0, nil
	e.faults = f
	return nil
}

// Faults returns the faults injected, with the end of the current outage.
func (e *Exchange) Faults() Faults {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.faults
	if e.cfg.Now().Before(e.outage) {
		until := e.outage
		f.OutageUntil = &until
	}
	return f
}

func (e *Exchange) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&f); err != nil {
		writeError(w, http.StatusBadRequest, -1102, "faults: %v; send {\"latency\": \"100ms\", \"error_rate\": 0.2, \"slow_rate\": 0, \"slow_delay\": \"0s\", \"outage_for\": \"3s\", \"drift_bps\": 0}", err)
		return
	}
	if err := e.SetFaults(f); err != nil {
		writeError(w, http.StatusBadRequest, -1102, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, e.Faults())
}

// Stats counts what the exchange saw.
type Stats struct {
	// Requests by endpoint: ticker, book, order, open_orders, account.
	Requests map[string]int `json:"requests"`
	// Outage, RateLimited, Errors and Slow count the requests answered 503 (outage),
	// 429, 500 (injected) and slowly.
	Outage      int `json:"outage"`
	RateLimited int `json:"rate_limited"`
	Errors      int `json:"errors"`
	Slow        int `json:"slow"`
	// Orders is the number of orders placed, one per client order id.
	Orders int `json:"orders"`
	// Submissions counts the order requests received by client order id: more than
	// one for an id means a client sent it again (the exchange kept one order).
	Submissions map[string]int `json:"submissions"`
	// Resubmissions is the number of order requests that named an existing client
	// order id and got the existing order back.
	Resubmissions int `json:"resubmissions"`
}

// Stats returns a copy of the counts.
func (e *Exchange) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Requests = make(map[string]int, len(e.stats.Requests))
	for k, v := range e.stats.Requests {
		s.Requests[k] = v
	}
	s.Submissions = make(map[string]int, len(e.stats.Submissions))
	for k, v := range e.stats.Submissions {
		s.Submissions[k] = v
	}
	return s
}

// Listen is net.Listen on addr, with a message saying what to do when it fails.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mockexchange cannot listen on %s: %w; stop what uses the port or choose another with --listen", addr, err)
	}
	return l, nil
}
