package mockexchange

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// market is one symbol's seeded random walk.
type market struct {
	mid float64
	rng *rand.Rand
}

// step moves the mid one step: a drift plus a normal draw of vol basis points.
func (m *market) step(driftBps, volBps float64) float64 {
	m.mid *= math.Exp((driftBps + volBps*m.rng.NormFloat64()) / 10000)
	return m.mid
}

// account is one API key's balances, cost basis, orders and weight window.
type account struct {
	balances    map[string]float64
	locked      map[string]float64
	cost        map[string]float64 // average cost of each base asset held
	windowStart time.Time
	used        int
}

// account returns acct's account, creating it with the starting balances; e.mu held.
func (e *Exchange) account(acct string) *account {
	a, ok := e.accounts[acct]
	if !ok {
		a = &account{balances: map[string]float64{}, locked: map[string]float64{}, cost: map[string]float64{}}
		for symbol := range e.markets {
			a.balances[strings.TrimSuffix(symbol, QuoteAsset)] = 0
		}
		for asset, v := range e.cfg.Balances {
			a.balances[asset] = v
			if p, ok := e.cfg.Prices[asset+QuoteAsset]; ok {
				a.cost[asset] = p
			}
		}
		e.accounts[acct] = a
	}
	return a
}

// quote moves symbol's walk one step and returns its bid, mid and ask; e.mu held.
func (e *Exchange) quote(symbol string) (bid, mid, ask float64, ok bool) {
	m, ok := e.markets[symbol]
	if !ok {
		return 0, 0, 0, false
	}
	mid = m.step(e.faults.DriftBps, e.cfg.VolBps)
	half := mid * e.cfg.SpreadBps / 20000
	return round2(mid - half), round2(mid), round2(mid + half), true
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func (e *Exchange) symbol(w http.ResponseWriter, r *http.Request) (string, bool) {
	s := r.URL.Query().Get("symbol")
	if _, ok := e.markets[s]; !ok {
		writeError(w, http.StatusBadRequest, -1121, "invalid symbol %q; this exchange trades %s", s, strings.Join(e.symbols(), ", "))
		return "", false
	}
	return s, true
}

func (e *Exchange) symbols() []string {
	out := make([]string, 0, len(e.markets))
	for s := range e.markets {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (e *Exchange) handleTicker(w http.ResponseWriter, r *http.Request, _ string) {
	s, ok := e.symbol(w, r)
	if !ok {
		return
	}
	e.mu.Lock()
	_, mid, _, _ := e.quote(s)
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"symbol": s, "price": num(mid)})
}

func (e *Exchange) handleBook(w http.ResponseWriter, r *http.Request, _ string) {
	s, ok := e.symbol(w, r)
	if !ok {
		return
	}
	e.mu.Lock()
	bid, _, ask, _ := e.quote(s)
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"symbol": s, "bidPrice": num(bid), "bidQty": "5", "askPrice": num(ask), "askQty": "5"})
}

// OrderRequest is the body of POST /api/v3/order.
type OrderRequest struct {
	Symbol   string  `json:"symbol"`
	Side     string  `json:"side"` // BUY or SELL (any case)
	Type     string  `json:"type"` // MARKET (default) or LIMIT
	Quantity float64 `json:"quantity"`
	// Price of a LIMIT order.
	Price float64 `json:"price,omitempty"`
	// NewClientOrderID makes the request idempotent: an order with this id that
	// exists is returned as it is, and nothing new is placed.
	NewClientOrderID string `json:"newClientOrderId,omitempty"`
}

// Order is an order as the exchange answers it.
type Order struct {
	OrderID       int64  `json:"orderId"`
	ClientOrderID string `json:"clientOrderId"`
	Account       string `json:"account"`
	Symbol        string `json:"symbol"`
	Side          string `json:"side"`
	Type          string `json:"type"`
	// Status is FILLED or NEW (a limit order resting in the book).
	Status      string  `json:"status"`
	OrigQty     float64 `json:"origQty"`
	ExecutedQty float64 `json:"executedQty"`
	Price       float64 `json:"price,omitempty"`
	// AvgPrice is the fill price.
	AvgPrice float64 `json:"avgPrice,omitempty"`
	// RealizedPnL of a fill that sells: (fill price - average cost) * quantity.
	RealizedPnL float64 `json:"realizedPnl"`
	// Position is the account's balance of the base asset after the fill, and
	// Equity its balances valued at the fill price (the base asset) and the mids (other assets).
	Position float64   `json:"position"`
	Equity   float64   `json:"equity"`
	Time     time.Time `json:"transactTime"`
	// Duplicate is true when the client order id existed: this is that order.
	Duplicate bool `json:"duplicate,omitempty"`
}

func (e *Exchange) handleOrder(w http.ResponseWriter, r *http.Request, acct string) {
	var req OrderRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, -1102, "order body: %v; send {\"symbol\": \"BTCUSDT\", \"side\": \"BUY\", \"type\": \"MARKET\", \"quantity\": 0.01, \"newClientOrderId\": \"...\"}", err)
		return
	}
	o, status, err := e.PlaceOrder(acct, req)
	if err != nil {
		writeError(w, status, -2010, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// PlaceOrder places an order for acct, once per client order id: an id that
// exists returns its order with Duplicate set. A market order fills at once at
// the ask (buy) or bid (sell); a limit order fills when marketable, else rests
// (status NEW). Its error, with an HTTP status, says what is wrong with the order.
func (e *Exchange) PlaceOrder(acct string, req OrderRequest) (*Order, int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if req.NewClientOrderID != "" {
		e.stats.Submissions[req.NewClientOrderID]++
		if o, ok := e.orders[req.NewClientOrderID]; ok {
			if o.Account != acct {
				return nil, http.StatusBadRequest, fmt.Errorf("client order id %q belongs to another account; use a new id", req.NewClientOrderID)
			}
			e.stats.Resubmissions++
			dup := *o
			dup.Duplicate = true
			return &dup, http.StatusOK, nil
		}
	}
	side := strings.ToUpper(req.Side)
	typ := strings.ToUpper(req.Type)
	if typ == "" {
		typ = "MARKET"
	}
	switch {
	case e.markets[req.Symbol] == nil:
		return nil, http.StatusBadRequest, fmt.Errorf("invalid symbol %q; this exchange trades %s", req.Symbol, strings.Join(e.symbols(), ", "))
	case side != "BUY" && side != "SELL":
		return nil, http.StatusBadRequest, fmt.Errorf("side must be BUY or SELL, got %q", req.Side)
	case typ != "MARKET" && typ != "LIMIT":
		return nil, http.StatusBadRequest, fmt.Errorf("type must be MARKET or LIMIT, got %q", req.Type)
	case !(req.Quantity > 0):
		return nil, http.StatusBadRequest, fmt.Errorf("quantity must be positive, got %g", req.Quantity)
	case typ == "LIMIT" && !(req.Price > 0):
		return nil, http.StatusBadRequest, fmt.Errorf("a LIMIT order needs a positive price, got %g", req.Price)
	}
	bid, _, ask, _ := e.quote(req.Symbol)
	fill := ask
	if side == "SELL" {
		fill = bid
	}
	marketable := typ == "MARKET" || (side == "BUY" && req.Price >= ask) || (side == "SELL" && req.Price <= bid)
	if typ == "LIMIT" && marketable {
		fill = req.Price
	}
	a := e.account(acct)
	base := strings.TrimSuffix(req.Symbol, QuoteAsset)
	reserve := req.Quantity * fill
	if typ == "LIMIT" && side == "BUY" {
		reserve = req.Quantity * req.Price
	}
	if side == "BUY" && a.balances[QuoteAsset]-a.locked[QuoteAsset] < reserve {
		return nil, http.StatusBadRequest, fmt.Errorf("insufficient balance: %s %s free, the order needs %s", num(a.balances[QuoteAsset]-a.locked[QuoteAsset]), QuoteAsset, num(reserve))
	}
	if side == "SELL" && a.balances[base]-a.locked[base] < req.Quantity {
		return nil, http.StatusBadRequest, fmt.Errorf("insufficient balance: %s %s free, the order sells %s", num(a.balances[base]-a.locked[base]), base, num(req.Quantity))
	}
	e.nextID++
	if req.NewClientOrderID == "" {
		req.NewClientOrderID = fmt.Sprintf("x-%d", e.nextID)
	}
	o := &Order{OrderID: e.nextID, ClientOrderID: req.NewClientOrderID, Account: acct, Symbol: req.Symbol, Side: side,
		Type: typ, Status: "NEW", OrigQty: req.Quantity, Price: req.Price, Time: e.cfg.Now().UTC()}
	if marketable {
		o.Status, o.ExecutedQty, o.AvgPrice = "FILLED", req.Quantity, fill
		o.RealizedPnL = a.fill(base, side, req.Quantity, fill)
	} else if side == "BUY" {
		a.locked[QuoteAsset] += reserve
	} else {
		a.locked[base] += req.Quantity
	}
	o.Position = a.balances[base]
	o.Equity = e.equity(a, base, fill)
	e.orders[o.ClientOrderID] = o
	e.stats.Orders++
	out := *o
	return &out, http.StatusOK, nil
}

// equity values an account's balances: base at price, other assets at their mid.
func (e *Exchange) equity(a *account, base string, price float64) float64 {
	v := a.balances[QuoteAsset]
	for symbol, m := range e.markets {
		asset := strings.TrimSuffix(symbol, QuoteAsset)
		if asset == base {
			v += a.balances[asset] * price
		} else {
			v += a.balances[asset] * m.mid
		}
	}
	return round2(v)
}

// fill moves the balances of a fill and returns its realized PnL, against the
// average cost of the base asset held.
func (a *account) fill(base, side string, qty, price float64) float64 {
	held := a.balances[base]
	if side == "BUY" {
		a.cost[base] = (a.cost[base]*held + price*qty) / (held + qty)
		a.balances[base] = held + qty
		a.balances[QuoteAsset] -= qty * price
		return 0
	}
	a.balances[base] = held - qty
	a.balances[QuoteAsset] += qty * price
	return round2((price - a.cost[base]) * qty)
}

// Orders returns every order placed, oldest first.
func (e *Exchange) Orders() []Order {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Order, 0, len(e.orders))
	for _, o := range e.orders {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OrderID < out[j].OrderID })
	return out
}

func (e *Exchange) handleOpenOrders(w http.ResponseWriter, r *http.Request, acct string) {
	symbol := r.URL.Query().Get("symbol")
	if symbol != "" {
		if _, ok := e.symbol(w, r); !ok {
			return
		}
	}
	open := []Order{}
	for _, o := range e.Orders() {
		if o.Account == acct && o.Status == "NEW" && (symbol == "" || o.Symbol == symbol) {
			open = append(open, o)
		}
	}
	writeJSON(w, http.StatusOK, open)
}

// Balance is one asset of an account.
type Balance struct {
	Asset  string `json:"asset"`
	Free   string `json:"free"`
	Locked string `json:"locked"`
}

// Balances returns acct's balances, sorted by asset.
func (e *Exchange) Balances(acct string) []Balance {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.account(acct)
	out := []Balance{}
	for asset, v := range a.balances {
		out = append(out, Balance{Asset: asset, Free: num(v - a.locked[asset]), Locked: num(a.locked[asset])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Asset < out[j].Asset })
	return out
}

func (e *Exchange) handleAccount(w http.ResponseWriter, r *http.Request, acct string) {
	writeJSON(w, http.StatusOK, map[string]any{"account": acct, "balances": e.Balances(acct)})
}
