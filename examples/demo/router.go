package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/examples/mockexchange"
	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
)

// routerConsumer is the durable consumer of FLOW_ORDERS the router reads.
const routerConsumer = "demo-order-router"

// fill is what became of an order intent at the exchange.
type fill struct {
	order *mockexchange.Order
	err   error
}

// router is the service that talks to the exchange: it consumes the order intents
// that order nodes publish to FLOW_ORDERS, places each at the exchange with its
// client_order_id (so that a redelivered intent never places a second order), and
// books each fill with a request to the book-fill workflow (a risk_update), so
// that the worker checks the bot's risk limits.
type router struct {
	js       jetstream.JetStream
	client   *client.Client
	watch    *watcher
	n        *narrator
	exchange string
	http     *http.Client

	mu      sync.Mutex
	intents map[string]bool // client order ids received
	done    map[string]chan fill
	results map[string]fill
}

func newRouter(nc *nats.Conn, cl *client.Client, w *watcher, n *narrator, exchangeURL string) (*router, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &router{js: js, client: cl, watch: w, n: n, exchange: exchangeURL, http: &http.Client{Timeout: 2 * time.Second},
		intents: map[string]bool{}, done: map[string]chan fill{}, results: map[string]fill{}}, nil
}

// run routes intents until ctx ends.
func (r *router) run(ctx context.Context) error {
	stream, err := r.js.Stream(ctx, contract.StreamOrders)
	if err != nil {
		return fmt.Errorf("order router: stream %s: %w", contract.StreamOrders, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: routerConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		FilterSubject: r.client.Subjects().OrdersAll(), DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("order router: consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { r.handle(ctx, m) })
	if err != nil {
		return fmt.Errorf("order router: consume: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (r *router) handle(ctx context.Context, m jetstream.Msg) {
	var in contract.OrderIntent
	if err := json.Unmarshal(m.Data(), &in); err != nil || in.ClientOrderID == "" {
		r.n.say("  ✗ order router: an intent it cannot read is left aside: %v", err)
		_ = m.Term()
		return
	}
	r.mu.Lock()
	r.intents[in.ClientOrderID] = true
	r.mu.Unlock()
	order, err := r.place(ctx, &in)
	if err != nil {
		if ctx.Err() != nil {
			_ = m.Nak()
			return
		}
		r.n.say("  ✗ exchange refused %s %s %g %s (%s): %v", in.BotID, strings.ToUpper(in.Side), in.Quantity, in.Symbol, in.ClientOrderID, err)
		_ = m.Term()
		r.finish(in.ClientOrderID, fill{err: err})
		return
	}
	dup := ""
	if order.Duplicate {
		dup = " (already placed: the exchange returned the same order)"
	}
	r.n.say("  $ %s %s %s %g %s: intent %s placed, filled @ %.2f (order %d), position %g, realized PnL %+.2f%s",
		in.BotID, in.WorkflowID, order.Side, order.ExecutedQty, order.Symbol, in.ClientOrderID, order.AvgPrice, order.OrderID, order.Position, order.RealizedPnL, dup)
	if order.Status == "FILLED" {
		if err := r.book(ctx, &in, order); err != nil {
			r.n.say("  ✗ order router: booking the fill of %s failed, the intent will be redelivered: %v", in.ClientOrderID, err)
			_ = m.NakWithDelay(time.Second)
			return
		}
	}
	if err := m.DoubleAck(ctx); err != nil {
		r.n.say("  ✗ order router: ack of %s failed (a redelivery places nothing twice): %v", in.ClientOrderID, err)
	}
	r.finish(in.ClientOrderID, fill{order: order})
}

// place sends the order with its client order id, retrying transient failures:
// the exchange places one order per client order id, so a retry is safe.
func (r *router) place(ctx context.Context, in *contract.OrderIntent) (*mockexchange.Order, error) {
	body, _ := json.Marshal(mockexchange.OrderRequest{Symbol: in.Symbol, Side: strings.ToUpper(in.Side), Type: strings.ToUpper(in.Type),
		Quantity: in.Quantity, Price: in.LimitPrice, NewClientOrderID: in.ClientOrderID})
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(2*time.Second))
	return backoff.RetryWithData(func() (*mockexchange.Order, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.exchange+"/api/v3/order", bytes.NewReader(body))
		if err != nil {
			return nil, backoff.Permanent(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-KEY", in.BotID)
		resp, err := r.http.Do(req)
		if err != nil {
			return nil, err // a connection error or a timeout: retry, the id makes it safe
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
		}
		if resp.StatusCode != http.StatusOK {
			return nil, backoff.Permanent(fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data))))
		}
		var o mockexchange.Order
		if err := json.Unmarshal(data, &o); err != nil {
			return nil, backoff.Permanent(fmt.Errorf("the exchange's answer is not an order: %w", err))
		}
		return &o, nil
	}, backoff.WithContext(backoff.WithMaxRetries(b, 10), ctx))
}

// book submits the fill to the book-fill workflow and waits until it ran. Its
// request id comes from the client order id, so a fill is booked once.
func (r *router) book(ctx context.Context, in *contract.OrderIntent, o *mockexchange.Order) error {
	id := "fill-" + strings.ReplaceAll(in.ClientOrderID, ".", "_")
	ch := r.watch.expect(id)
	_, err := r.client.Submit(ctx, &contract.Request{RequestID: id, WorkflowID: "book-fill", BotID: in.BotID, StrategyID: in.StrategyID,
		CorrelationID: in.CorrelationID,
		Inputs:        map[string]any{"symbol": o.Symbol, "realized_pnl": o.RealizedPnL, "equity": o.Equity, "position": o.Position, "price": o.AvgPrice}})
	if err != nil {
		return err
	}
	ev, err := r.watch.wait(ctx, "book-fill", id, ch, 30*time.Second)
	if err != nil {
		return err
	}
	if ev.Type != contract.ExecutionCompleted {
		return fmt.Errorf("book-fill %s ended %s: %s", id, ev.Type, errText(ev.Error))
	}
	if m, ok := ev.Outputs["book"].(map[string]any); ok {
		r.n.say("  ≡ risk: %s daily PnL %+.2f, equity %.2f", in.BotID, num(m["daily_pnl"]), num(m["equity"]))
	}
	return nil
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func (r *router) finish(id string, f fill) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[id] = f
	if ch, ok := r.done[id]; ok {
		ch <- f
		delete(r.done, id)
	}
}

// waitFill waits until the router has dealt with an intent.
func (r *router) waitFill(ctx context.Context, id string, within time.Duration) (fill, error) {
	r.mu.Lock()
	if f, ok := r.results[id]; ok {
		r.mu.Unlock()
		return f, nil
	}
	ch := make(chan fill, 1)
	r.done[id] = ch
	r.mu.Unlock()
	select {
	case f := <-ch:
		return f, nil
	case <-time.After(within):
		return fill{}, fmt.Errorf("order %s not routed within %s", id, within)
	case <-ctx.Done():
		return fill{}, ctx.Err()
	}
}

// intentIDs returns the client order ids of every intent received.
func (r *router) intentIDs() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.intents))
	for id := range r.intents {
		out[id] = true
	}
	return out
}
