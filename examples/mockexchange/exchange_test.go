package mockexchange

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for weight windows and outages.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTest(t *testing.T, cfg Config) (*Exchange, *httptest.Server, *clock) {
	t.Helper()
	clk := &clock{now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	return e, srv, clk
}

// call sends a request and decodes a JSON answer into out when it is not nil.
func call(t *testing.T, method, url, acct string, body any, out any) *http.Response {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if acct != "" {
		req.Header.Set("X-API-KEY", acct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
	return resp
}

func prices(t *testing.T, seed uint64, n int) []string {
	_, srv, _ := newTest(t, Config{Seed: seed})
	var out []string
	for range n {
		var tick map[string]string
		call(t, "GET", srv.URL+"/api/v3/ticker/price?symbol=BTCUSDT", "", nil, &tick)
		out = append(out, tick["price"])
	}
	return out
}

func TestWalkRepeatsWithItsSeed(t *testing.T) {
	a, b, c := prices(t, 7, 20), prices(t, 7, 20), prices(t, 8, 20)
	if strings.Join(a, ",") != strings.Join(b, ",") {
		t.Errorf("same seed, different prices:\n%v\n%v", a, b)
	}
	if strings.Join(a, ",") == strings.Join(c, ",") {
		t.Errorf("different seeds gave the same prices: %v", a)
	}
}

func TestBookTopHasBidBelowAsk(t *testing.T) {
	_, srv, _ := newTest(t, Config{})
	var book map[string]string
	resp := call(t, "GET", srv.URL+"/api/v3/ticker/bookTicker?symbol=ETHUSDT", "", nil, &book)
	if resp.StatusCode != 200 || !(book["bidPrice"] < book["askPrice"]) {
		t.Fatalf("status %d, book %v", resp.StatusCode, book)
	}
	resp = call(t, "GET", srv.URL+"/api/v3/ticker/bookTicker?symbol=NOPE", "", nil, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown symbol: status %d, want 400", resp.StatusCode)
	}
}

func TestOrderIsPlacedOncePerClientOrderID(t *testing.T) {
	e, srv, _ := newTest(t, Config{})
	req := OrderRequest{Symbol: "BTCUSDT", Side: "buy", Quantity: 0.1, NewClientOrderID: "exec-1.buy"}
	var first, second Order
	call(t, "POST", srv.URL+"/api/v3/order", "b1", req, &first)
	call(t, "POST", srv.URL+"/api/v3/order", "b1", req, &second)
	if first.Status != "FILLED" || first.Duplicate || !second.Duplicate || second.OrderID != first.OrderID {
		t.Fatalf("first %+v, second %+v: want one filled order returned twice", first, second)
	}
	st := e.Stats()
	if st.Orders != 1 || st.Resubmissions != 1 || st.Submissions["exec-1.buy"] != 2 {
		t.Errorf("stats %+v: want 1 order, 1 resubmission, 2 submissions of exec-1.buy", st)
	}
	// Another account may not reuse the id.
	if resp := call(t, "POST", srv.URL+"/api/v3/order", "b2", req, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("another account's id: status %d, want 400", resp.StatusCode)
	}
}

func TestFillsMoveBalancesAndRealizePnL(t *testing.T) {
	e, _, _ := newTest(t, Config{Prices: map[string]float64{"BTCUSDT": 100}, VolBps: 1e-9, SpreadBps: 1e-9, Balances: map[string]float64{"USDT": 1000}})
	buy, _, err := e.PlaceOrder("a", OrderRequest{Symbol: "BTCUSDT", Side: "BUY", Quantity: 2})
	if err != nil || buy.Position != 2 {
		t.Fatalf("buy %+v, %v", buy, err)
	}
	if err := e.SetFaults(Faults{DriftBps: -1000}); err != nil { // the next step is about 10% lower
		t.Fatal(err)
	}
	sell, _, err := e.PlaceOrder("a", OrderRequest{Symbol: "BTCUSDT", Side: "SELL", Quantity: 1})
	if err != nil || sell.Position != 1 || !(sell.RealizedPnL < -9 && sell.RealizedPnL > -10) {
		t.Fatalf("sell %+v, %v: want a loss of about 9.5 and 1 BTC left", sell, err)
	}
	_, status, err := e.PlaceOrder("a", OrderRequest{Symbol: "BTCUSDT", Side: "SELL", Quantity: 5})
	if status != http.StatusBadRequest || err == nil || !strings.Contains(err.Error(), "insufficient balance") {
		t.Errorf("oversell: %d %v", status, err)
	}
}

func TestLimitOrderRestsAndIsListed(t *testing.T) {
	_, srv, _ := newTest(t, Config{})
	var o Order
	call(t, "POST", srv.URL+"/api/v3/order", "b1", OrderRequest{Symbol: "BTCUSDT", Side: "BUY", Type: "LIMIT", Quantity: 0.1, Price: 1000, NewClientOrderID: "l1"}, &o)
	if o.Status != "NEW" {
		t.Fatalf("a limit far below the market: %+v, want NEW", o)
	}
	var open []Order
	call(t, "GET", srv.URL+"/api/v3/openOrders?symbol=BTCUSDT", "b1", nil, &open)
	if len(open) != 1 || open[0].ClientOrderID != "l1" {
		t.Errorf("open orders %+v", open)
	}
	var acct struct{ Balances []Balance }
	call(t, "GET", srv.URL+"/api/v3/account", "b1", nil, &acct)
	if len(acct.Balances) != 3 { // BTC, ETH, USDT
		t.Errorf("balances %+v", acct.Balances)
	}
}

func TestWeightBudgetAnswers429WithRetryAfter(t *testing.T) {
	e, srv, clk := newTest(t, Config{WeightLimit: 5, Window: time.Minute})
	url := srv.URL + "/api/v3/ticker/bookTicker?symbol=BTCUSDT" // weight 2
	for i, want := range []string{"2", "4"} {
		resp := call(t, "GET", url, "b1", nil, nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Used-Weight") != want || resp.Header.Get("X-Weight-Limit") != "5" {
			t.Fatalf("request %d: %d, used %q", i, resp.StatusCode, resp.Header.Get("X-Used-Weight"))
		}
	}
	resp := call(t, "GET", url, "b1", nil, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
		t.Fatalf("over budget: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := call(t, "GET", url, "b2", nil, nil); resp.StatusCode != 200 {
		t.Errorf("another account has its own budget: %d", resp.StatusCode)
	}
	clk.Add(time.Minute)
	if resp := call(t, "GET", url, "b1", nil, nil); resp.StatusCode != 200 {
		t.Errorf("next window: %d", resp.StatusCode)
	}
	if e.Stats().RateLimited != 1 {
		t.Errorf("stats %+v", e.Stats())
	}
}

func TestFaultsAtRunTime(t *testing.T) {
	e, srv, clk := newTest(t, Config{})
	url := srv.URL + "/api/v3/ticker/price?symbol=BTCUSDT"
	put := func(body string) int {
		req, _ := http.NewRequest("PUT", srv.URL+"/admin/faults", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if put(`{"outage_for": "30s"}`) != 200 {
		t.Fatal("set outage")
	}
	if resp := call(t, "GET", url, "", nil, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("during the outage: %d, want 503", resp.StatusCode)
	}
	var f Faults
	call(t, "GET", srv.URL+"/admin/faults", "", nil, &f)
	if f.OutageUntil == nil {
		t.Errorf("faults %+v: want the outage's end", f)
	}
	clk.Add(31 * time.Second)
	if resp := call(t, "GET", url, "", nil, nil); resp.StatusCode != 200 {
		t.Errorf("after the outage: %d", resp.StatusCode)
	}
	if put(`{"error_rate": 1}`) != 200 {
		t.Fatal("set error rate")
	}
	if resp := call(t, "GET", url, "", nil, nil); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("error rate 1: %d, want 500", resp.StatusCode)
	}
	for _, bad := range []string{`{"error_rate": 2}`, `{"latency": "soon"}`, `{"nope": 1}`} {
		if code := put(bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	st := e.Stats()
	if st.Outage != 1 || st.Errors != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSlowAnswerOutlivesAClientTimeout(t *testing.T) {
	_, srv, _ := newTest(t, Config{Faults: Faults{SlowRate: 1, SlowDelay: time.Minute}})
	client := &http.Client{Timeout: 200 * time.Millisecond}
	_, err := client.Get(srv.URL + "/api/v3/ticker/price?symbol=BTCUSDT")
	var timeout interface{ Timeout() bool }
	if !errors.As(err, &timeout) || !timeout.Timeout() {
		t.Fatalf("err %v, want the client's timeout", err)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Prices: map[string]float64{"BTCEUR": 1}},
		{Prices: map[string]float64{"BTCUSDT": -1}},
		{Faults: Faults{ErrorRate: 1.5}},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}
