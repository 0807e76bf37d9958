package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/flowguard/flowguard/examples/mockexchange"
	"github.com/flowguard/flowguard/internal/contract"
)

// HTTPPoint compares, at one worker concurrency, a workflow that calls the
// simulated exchange over HTTP (a ticker, then an order) with a workflow of two
// transform nodes, and with the same two HTTP calls made directly.
type HTTPPoint struct {
	Concurrency int `json:"concurrency"`
	Requests    int `json:"requests"`
	// The http workflow: each node goes through the resilience chain (retry,
	// breaker, timeout) and the worker's HTTP client.
	ExecPerSec float64 `json:"executions_per_second"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	// The 2-node transform workflow at the same concurrency: the broker's share.
	TransformExecPerSec float64 `json:"transform_executions_per_second"`
	TransformP50MS      float64 `json:"transform_p50_ms"`
	// The two calls made directly with net/http, as many at once: the
	// exchange's and the HTTP stack's share.
	DirectPairsPerSec float64 `json:"direct_pairs_per_second"`
	// Ratio is ExecPerSec / TransformExecPerSec.
	Ratio float64 `json:"ratio_to_transform"`
}

// httpWorkflow reads the ticker, then places a market order whose client order id
// is the execution id (so a retried POST is safe, hence idempotent).
func httpWorkflow(id, exchange string) string {
	return fmt.Sprintf(`{"id": %q, "nodes": [
  {"id": "ticker", "type": "http", "provider": "mockexchange", "config": {
    "url": %q, "query": {"symbol": "BTCUSDT"}, "headers": {"X-API-KEY": "bench"},
    "outputs": {"price": "float(body.price)"}}},
  {"id": "order", "type": "http", "provider": "mockexchange", "depends_on": ["ticker"], "config": {
    "method": "POST", "url": %q, "idempotent": true, "headers": {"X-API-KEY": "bench"},
    "body": {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": 0.001, "newClientOrderId": "${execution.id}"},
    "outputs": {"order_id": "body.orderId", "price": "body.avgPrice"}}}]}`,
		id, exchange+"/api/v3/ticker/price", exchange+"/api/v3/order")
}

// httpSweep measures an HTTPPoint at each concurrency of the configuration, against
// a simulated exchange in this process.
func (e *env) httpSweep(ctx context.Context) ([]HTTPPoint, error) {
	ex, err := mockexchange.Start(mockexchange.Config{WeightLimit: 1 << 30, Balances: map[string]float64{mockexchange.QuoteAsset: 1e12}})
	if err != nil {
		return nil, err
	}
	defer ex.Close()
	var out []HTTPPoint
	for _, c := range e.cfg.Concurrency {
		p, err := e.httpPoint(ctx, ex.URL, c)
		if err != nil {
			return nil, fmt.Errorf("http workload at concurrency %d: %w", c, err)
		}
		out = append(out, *p)
	}
	return out, nil
}

func (e *env) httpPoint(ctx context.Context, exchange string, concurrency int) (*HTTPPoint, error) {
	stop, err := e.startWorker(ctx, "bench-http", concurrency)
	if err != nil {
		return nil, err
	}
	defer stop()
	p := &HTTPPoint{Concurrency: concurrency, Requests: e.cfg.Requests}
	var lat []time.Duration
	if p.ExecPerSec, lat, err = e.drive(ctx, "bench-http", httpWorkflow("bench-http", exchange), concurrency); err != nil {
		return nil, err
	}
	p.P50MS, p.P99MS = percentile(lat, 0.5), percentile(lat, 0.99)
	if p.TransformExecPerSec, lat, err = e.drive(ctx, "bench-n2", chainWorkflow("bench-n2", 2), concurrency); err != nil {
		return nil, err
	}
	p.TransformP50MS = percentile(lat, 0.5)
	p.Ratio = p.ExecPerSec / p.TransformExecPerSec
	if p.DirectPairsPerSec, err = directPairs(ctx, exchange, concurrency, e.cfg.Requests, e.cfg.Progress); err != nil {
		return nil, fmt.Errorf("direct calls: %w", err)
	}
	return p, nil
}

// drive deploys a workflow and runs Requests executions of it, with as many
// outstanding as concurrency; it returns executions per second and the sorted
// latencies from publishing each request to its execution_completed event. A
// failed execution fails the measurement.
func (e *env) drive(ctx context.Context, wf, def string, concurrency int) (float64, []time.Duration, error) {
	if _, _, err := e.client.Deploy(ctx, []byte(def)); err != nil {
		return 0, nil, err
	}
	done, err := e.watchCompletions(fmt.Sprintf("flow.events.*.%s.*.%s", wf, contract.ExecutionCompleted))
	if err != nil {
		return 0, nil, err
	}
	defer done.stop()
	failed, err := e.watchCompletions(fmt.Sprintf("flow.events.*.%s.*.%s", wf, contract.ExecutionFailed))
	if err != nil {
		return 0, nil, err
	}
	defer failed.stop()

	n := e.cfg.Requests
	step := fmt.Sprintf("%s, concurrency %d", wf, concurrency)
	submit := func(ctx context.Context, id string, i int) error {
		if failed.count() > 0 {
			return fmt.Errorf("%d executions of %s failed; is the exchange reachable from the worker?", failed.count(), wf)
		}
		_, err := e.client.Submit(ctx, &contract.Request{WorkflowID: wf, RequestID: id, Inputs: map[string]any{"n": i}})
		return err
	}
	lat, elapsed, err := e.closedLoop(ctx, done, submit, fmt.Sprintf("h%d-%d", time.Now().UnixNano(), concurrency), n, concurrency, step)
	if err != nil && failed.count() > 0 {
		return 0, nil, fmt.Errorf("%d executions of %s failed; is the exchange reachable from the worker? (%w)", failed.count(), wf, err)
	}
	if err != nil {
		return 0, nil, err
	}
	return float64(n) / elapsed.Seconds(), lat, nil
}

// directPairs makes the workflow's two calls (ticker, then order) total times with
// plain net/http from concurrency goroutines, and returns pairs per second.
func directPairs(ctx context.Context, exchange string, concurrency, total int, progress func(string, int, int)) (float64, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	call := func(req *http.Request) error {
		req.Header.Set("X-API-KEY", "bench-direct")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: HTTP %d", req.Method, req.URL.Path, resp.StatusCode)
		}
		return nil
	}
	run := time.Now().UnixNano()
	step := fmt.Sprintf("direct HTTP, concurrency %d", concurrency)
	return closedLoop(total, concurrency, step, progress, func(i int) error {
		tick, _ := http.NewRequestWithContext(ctx, http.MethodGet, exchange+"/api/v3/ticker/price?symbol=BTCUSDT", nil)
		body, _ := json.Marshal(mockexchange.OrderRequest{Symbol: "BTCUSDT", Side: "BUY", Type: "MARKET", Quantity: 0.001,
			NewClientOrderID: fmt.Sprintf("d%d-%d-%d", run, concurrency, i)})
		order, _ := http.NewRequestWithContext(ctx, http.MethodPost, exchange+"/api/v3/order", bytes.NewReader(body))
		order.Header.Set("Content-Type", "application/json")
		if err := call(tick); err != nil {
			return err
		}
		return call(order)
	})
}
