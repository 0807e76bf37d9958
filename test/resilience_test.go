package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/worker"
)

// scripted is a provider's HTTP API that answers each request with the next step
// of its script, the last step repeating; it records when it was hit.
type scripted struct {
	*httptest.Server
	mu     sync.Mutex
	steps  []http.HandlerFunc
	offset int // hits before the current script
	hits   []time.Time
}

func newScripted(t *testing.T, steps ...http.HandlerFunc) *scripted {
	t.Helper()
	s := &scripted{steps: steps}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits = append(s.hits, time.Now())
		step := s.steps[min(len(s.hits)-s.offset, len(s.steps))-1]
		s.mu.Unlock()
		step(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// script replaces the steps from the next hit on.
func (s *scripted) script(steps ...http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps, s.offset = steps, len(s.hits)
}

func (s *scripted) hitTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits)
}

func answer(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// hang answers after 10 seconds, or never when the caller gives up first.
func hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
		answer(200, `{"late": true}`)(w, r)
	}
}

// breakerMessages collects the breaker state changes published on flow.breakers.>.
type breakerMessages struct {
	mu   sync.Mutex
	msgs []contract.BreakerState
}

func (h *harness) watchBreakers() *breakerMessages {
	h.t.Helper()
	b := &breakerMessages{}
	sub, err := h.nc.Subscribe("flow.breakers.>", func(m *nats.Msg) {
		var st contract.BreakerState
		if err := json.Unmarshal(m.Data, &st); err != nil {
			h.t.Errorf("breaker message %s: %v", m.Data, err)
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.msgs = append(b.msgs, st)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	return b
}

// wait waits for a message matching match and returns it.
func (b *breakerMessages) wait(t *testing.T, what string, match func(contract.BreakerState) bool) contract.BreakerState {
	t.Helper()
	var found contract.BreakerState
	natstest.WaitFor(t, 10*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, m := range b.msgs {
			if match(m) {
				found = m
				return nil
			}
		}
		return fmt.Errorf("no breaker message %s among %+v", what, b.msgs)
	})
	return found
}

// httpWorkflow is a workflow of one http node calling url; extra is spliced into the node.
func httpWorkflow(id, url, extra string) string {
	return fmt.Sprintf(`{"id": %q, "nodes": [{"id": "call", "type": "http", %s "config": {"url": %q, "outputs": {"price": "body.price"}}}]}`, id, extra, url)
}

// runOnce submits a request and waits for its terminal status.
func (h *harness) runOnce(workflowID string) (*contract.Status, []contract.Event) {
	h.t.Helper()
	id := h.submit(&contract.Request{WorkflowID: workflowID})
	st := h.waitStatus(workflowID, id, 20*time.Second)
	return st, h.events(workflowID, id)
}

func nodeEvents(evs []contract.Event, typ string) []contract.Event {
	var out []contract.Event
	for _, e := range evs {
		if e.Type == typ && e.NodeID == "call" {
			out = append(out, e)
		}
	}
	return out
}

// exactRetries makes retry waits exact, so that the recorded delays can be checked.
func exactRetries(c *worker.Config) {
	zero := 0.0
	c.Resilience.Jitter = &zero
}

func TestProviderTimeoutFailsTheNodeAndTheWorkerGoesOn(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	slow := newScripted(t, hang)
	h.deploy(httpWorkflow("slow-quote", slow.URL+"/quote", `"timeout": "1s", "retry": {"max_attempts": 1},`))
	h.deploy(twoStepWorkflow)

	st, evs := h.runOnce("slow-quote")
	if st.Status != contract.StatusFailed || st.Error.Kind != contract.KindTimeout || !strings.Contains(st.Error.Message, "1s") {
		t.Fatalf("status %s, error %+v; want failed with kind timeout", st.Status, st.Error)
	}
	failed := nodeEvents(evs, contract.NodeFailed)
	if len(failed) != 1 || failed[0].Attempt != 1 || *failed[0].DurationMS < 900 || *failed[0].DurationMS > 5000 {
		t.Fatalf("node_failed %+v; want one attempt of about a second", failed)
	}
	// The worker goes on.
	next := h.submit(&contract.Request{WorkflowID: "two-step", Inputs: map[string]any{"n": 1}})
	if st := h.waitStatus("two-step", next, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Errorf("next execution ended %s: %+v", st.Status, st.Error)
	}
}

func TestTransientFailuresThenSuccessOnTheConfiguredAttempt(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", exactRetries)
	api := newScripted(t, answer(503, `{"msg": "busy"}`), answer(502, ""), answer(200, `{"price": 64990.5}`))
	h.deploy(httpWorkflow("flaky-quote", api.URL+"/quote", `"retry": {"max_attempts": 3, "min_wait": "20ms", "max_wait": "1s", "multiplier": 3},`))

	st, evs := h.runOnce("flaky-quote")
	if st.Status != contract.StatusCompleted {
		t.Fatalf("status %s, error %+v", st.Status, st.Error)
	}
	retries := nodeEvents(evs, contract.NodeRetrying)
	want := []struct {
		attempt int
		delayMS int64
		message string
	}{{2, 20, "HTTP 503"}, {3, 60, "HTTP 502"}}
	if len(retries) != len(want) {
		t.Fatalf("node_retrying events %+v, want %d", retries, len(want))
	}
	for i, w := range want {
		r := retries[i]
		if r.Attempt != w.attempt || r.DelayMS == nil || *r.DelayMS != w.delayMS || r.Error == nil || r.Error.Kind != nodes.KindHTTPStatus || !strings.Contains(r.Error.Message, w.message) {
			t.Errorf("retry %d: attempt %d, delay %v, error %+v; want attempt %d after %dms for %s", i+1, r.Attempt, r.DelayMS, r.Error, w.attempt, w.delayMS, w.message)
		}
	}
	done := nodeEvents(evs, contract.NodeCompleted)
	if len(done) != 1 || done[0].Attempt != 3 || done[0].Outputs["price"] != 64990.5 {
		t.Errorf("node_completed %+v", done)
	}
	if hits := len(api.hitTimes()); hits != 3 {
		t.Errorf("%d calls, want 3", hits)
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	api := newScripted(t, answer(400, `{"code": -1121, "msg": "Invalid symbol."}`))
	h.deploy(httpWorkflow("bad-symbol", api.URL+"/quote", `"retry": {"max_attempts": 5, "min_wait": "10ms"},`))

	st, evs := h.runOnce("bad-symbol")
	if st.Status != contract.StatusFailed || st.Error.Kind != nodes.KindHTTPStatus || !strings.Contains(st.Error.Message, "Invalid symbol") {
		t.Fatalf("status %s, error %+v", st.Status, st.Error)
	}
	if len(nodeEvents(evs, contract.NodeRetrying)) != 0 || nodeEvents(evs, contract.NodeFailed)[0].Attempt != 1 || len(api.hitTimes()) != 1 {
		t.Errorf("a 4xx was retried: events %v, %d calls", eventTypes(evs), len(api.hitTimes()))
	}
}

// A POST that met a 5xx may have placed the order: it is not sent again, unless
// the node declares the call idempotent (it carries a client order id).
func TestPostIsRetriedOnlyWhenDeclaredIdempotent(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	post := func(id, url, extra string) string {
		return fmt.Sprintf(`{"id": %q, "nodes": [{"id": "call", "type": "http", "retry": {"max_attempts": 3, "min_wait": "10ms"},
		  "config": {"method": "POST", "url": %q, %s "body": {"client_order_id": "${execution.id}"}}}]}`, id, url, extra)
	}
	api := newScripted(t, answer(502, `{"msg": "bad gateway"}`), answer(200, `{"order_id": 1}`))
	h.deploy(post("place-order", api.URL+"/orders", ""))
	st, evs := h.runOnce("place-order")
	if st.Status != contract.StatusFailed || st.Error.Kind != nodes.KindHTTPStatus || !strings.Contains(st.Error.Message, "not retried") {
		t.Fatalf("status %s, error %+v; want failed at once", st.Status, st.Error)
	}
	if len(nodeEvents(evs, contract.NodeRetrying)) != 0 || len(api.hitTimes()) != 1 {
		t.Errorf("a POST was sent again after a 502: events %v, %d calls", eventTypes(evs), len(api.hitTimes()))
	}

	api = newScripted(t, answer(502, `{"msg": "bad gateway"}`), answer(200, `{"order_id": 1}`))
	h.deploy(post("place-order-idempotent", api.URL+"/orders", `"idempotent": true,`))
	if st, _ := h.runOnce("place-order-idempotent"); st.Status != contract.StatusCompleted || len(api.hitTimes()) != 2 {
		t.Errorf("idempotent POST: status %s %+v after %d calls, want completed after 2", st.Status, st.Error, len(api.hitTimes()))
	}
}

// A 429 waits for its Retry-After; the 4s wait is longer than the 3s ack wait, so
// it also checks that heartbeats keep the request from being redelivered meanwhile.
func TestTooManyRequestsWaitsForRetryAfter(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) {
		exactRetries(c)
		c.Consumer.AckWait = 3 * time.Second
	})
	api := newScripted(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "4")
		answer(429, `{"msg": "too many requests"}`)(w, r)
	}, answer(200, `{"price": 1}`))
	h.deploy(httpWorkflow("rate-limited", api.URL+"/quote", `"retry": {"max_attempts": 2, "min_wait": "10ms"},`))

	st, evs := h.runOnce("rate-limited")
	if st.Status != contract.StatusCompleted || st.Attempt != 1 {
		t.Fatalf("status %s after %d deliveries, error %+v; want completed on the first delivery", st.Status, st.Attempt, st.Error)
	}
	retries := nodeEvents(evs, contract.NodeRetrying)
	if len(retries) != 1 || *retries[0].DelayMS != 4000 || retries[0].Error.Kind != nodes.KindRateLimited {
		t.Fatalf("node_retrying %+v; want one wait of 4000ms (the Retry-After, not the 10ms backoff)", retries)
	}
	if hits := api.hitTimes(); len(hits) != 2 || hits[1].Sub(hits[0]) < 3900*time.Millisecond {
		t.Errorf("calls at %v; the second should come 4s after the first", hits)
	}
	if n := strings.Count(strings.Join(eventTypes(evs), " "), contract.ExecutionStarted); n != 1 {
		t.Errorf("%d execution_started events: the request was redelivered during the wait", n)
	}
}

// TestNATSRequestRetriesAMicroService calls a NATS micro service that fails on a
// script, then one that does not exist.
func TestNATSRequestRetriesAMicroService(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", exactRetries)
	var mu sync.Mutex
	calls := 0
	svc, err := micro.AddService(h.nc, micro.Config{
		Name: "quotes", Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "md.quote", Handler: micro.HandlerFunc(func(req micro.Request) {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n == 1 {
				_ = req.Error("503", "order book warming up", nil)
				return
			}
			var q struct{ Symbol string }
			_ = json.Unmarshal(req.Data(), &q)
			_ = req.RespondJSON(map[string]any{"symbol": q.Symbol, "bid": 64990.5, "ask": 64991.5})
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	h.deploy(`{"id": "nats-quote", "nodes": [{"id": "call", "type": "nats_request", "retry": {"max_attempts": 3, "min_wait": "10ms"},
		"config": {"subject": "md.quote", "body": {"symbol": "${inputs.symbol}"}, "outputs": {"mid": "(body.bid + body.ask) / 2"}}}]}`)
	id := h.submit(&contract.Request{WorkflowID: "nats-quote", Inputs: map[string]any{"symbol": "BTCUSDT"}})
	if st := h.waitStatus("nats-quote", id, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("status %s %+v", st.Status, st.Error)
	}
	evs := h.events("nats-quote", id)
	retries, done := nodeEvents(evs, contract.NodeRetrying), nodeEvents(evs, contract.NodeCompleted)
	if len(retries) != 1 || retries[0].Error.Kind != nodes.KindServiceError || len(done) != 1 || done[0].Attempt != 2 || done[0].Outputs["mid"] != 64991.0 {
		t.Errorf("retries %+v, completion %+v", retries, done)
	}

	h.deploy(`{"id": "nobody", "nodes": [{"id": "call", "type": "nats_request", "retry": {"max_attempts": 2, "min_wait": "10ms"}, "config": {"subject": "md.nobody"}}]}`)
	st, evs := h.runOnce("nobody")
	if st.Error == nil || st.Error.Kind != nodes.KindNoResponders || len(nodeEvents(evs, contract.NodeRetrying)) != 1 {
		t.Errorf("no responders: %+v, events %v; want retried once, then failed with no_responders", st.Error, eventTypes(evs))
	}
}

func TestBreakerOpensFailsFastAndRecoversThroughHalfOpen(t *testing.T) {
	h := newHarness(t)
	// The open time must outlast the execution run while the breaker is open, on a
	// busy machine too: gobreaker reads the wall clock, so the test waits it out.
	const openTime = 10 * time.Second
	h.startWorker("w1", func(c *worker.Config) {
		c.Resilience.Overrides = resilience.Settings{
			Retry:   resilience.RetrySettings{MaxAttempts: 1},
			Breaker: resilience.BreakerSettings{Threshold: 3, OpenTime: openTime},
		}
	})
	changes := h.watchBreakers()
	api := newScripted(t, answer(503, `{"msg": "down"}`))
	h.deploy(httpWorkflow("quote", api.URL+"/quote", `"provider": "exchange",`))

	// Three executions fail, each counting one failed attempt in the shared breaker.
	for i := range 3 {
		if st, _ := h.runOnce("quote"); st.Error == nil || st.Error.Kind != nodes.KindHTTPStatus {
			t.Fatalf("execution %d: %+v", i+1, st.Error)
		}
	}
	opened := changes.wait(t, "open", func(m contract.BreakerState) bool { return m.State == contract.BreakerOpen })
	if opened.Provider != "exchange" || opened.WorkerID != "w1" || opened.Source != contract.BreakerSourceBreaker || opened.OpenUntil == nil || !strings.Contains(opened.Reason, "503") {
		t.Errorf("open message %+v", opened)
	}
	// While open: the node fails at once, without a call.
	st, evs := h.runOnce("quote")
	if st.Error == nil || st.Error.Kind != contract.KindCircuitOpen || len(api.hitTimes()) != 3 {
		t.Fatalf("while open: error %+v after %d calls; want circuit_open and no call", st.Error, len(api.hitTimes()))
	}
	if f := nodeEvents(evs, contract.NodeFailed); len(f) != 1 || *f[0].DurationMS > 100 {
		t.Errorf("a refused node should fail at once: %+v", f)
	}

	// The provider is back; after the open time a probe goes through and closes it.
	api.script(answer(200, `{"price": 2}`))
	natstest.WaitFor(t, openTime+30*time.Second, func() error {
		if time.Now().Before(*opened.OpenUntil) {
			return fmt.Errorf("breaker open until %s", opened.OpenUntil)
		}
		return nil
	})
	if st, _ := h.runOnce("quote"); st.Status != contract.StatusCompleted {
		t.Fatalf("probe execution: %s %+v", st.Status, st.Error)
	}
	changes.wait(t, "half_open", func(m contract.BreakerState) bool { return m.State == contract.BreakerHalfOpen })
	changes.wait(t, "closed", func(m contract.BreakerState) bool {
		return m.State == contract.BreakerClosed && m.Previous == contract.BreakerHalfOpen
	})
	if st, _ := h.runOnce("quote"); st.Status != contract.StatusCompleted {
		t.Errorf("after closing: %s", st.Status)
	}
}

func TestClusterBreakerFailsFastOnEveryWorker(t *testing.T) {
	for _, scope := range []string{contract.BreakerScopeCluster, contract.BreakerScopeLocal} {
		t.Run(scope, func(t *testing.T) {
			h := newHarness(t)
			config := func(c *worker.Config) {
				c.Resilience.BreakerScope = scope
				c.Resilience.Overrides = resilience.Settings{
					Retry:   resilience.RetrySettings{MaxAttempts: 1},
					Breaker: resilience.BreakerSettings{Threshold: 1, OpenTime: time.Minute},
				}
			}
			stops := map[string]func(){"w1": h.startWorker("w1", config), "w2": h.startWorker("w2", config)}
			changes := h.watchBreakers()
			api := newScripted(t, answer(503, `{"msg": "down"}`))
			h.deploy(httpWorkflow("quote", api.URL+"/quote", `"provider": "exchange",`))

			// One failure opens the breaker of whichever worker ran it; the other
			// worker has not called the provider yet.
			h.runOnce("quote")
			opened := changes.wait(t, "open", func(m contract.BreakerState) bool { return m.State == contract.BreakerOpen })
			other := map[string]string{"w1": "w2", "w2": "w1"}[opened.WorkerID]
			stops[opened.WorkerID]()

			st, _ := h.runOnce("quote")
			if st.WorkerID != other {
				t.Fatalf("ran on %s, want %s", st.WorkerID, other)
			}
			if scope == contract.BreakerScopeLocal {
				if st.Error == nil || st.Error.Kind != nodes.KindHTTPStatus || len(api.hitTimes()) != 2 {
					t.Errorf("local scope: %s called the provider? error %+v, %d calls", other, st.Error, len(api.hitTimes()))
				}
				return
			}
			if st.Error == nil || st.Error.Kind != contract.KindCircuitOpen || !strings.Contains(st.Error.Message, "worker "+opened.WorkerID) || len(api.hitTimes()) != 1 {
				t.Errorf("cluster scope: %s should fail fast: error %+v, %d calls", other, st.Error, len(api.hitTimes()))
			}
			shared, err := h.client.Breakers(h.ctx, "exchange")
			if err != nil || len(shared) != 1 || shared[0].Shared == nil || shared[0].Shared.State != contract.BreakerOpen || shared[0].Shared.WorkerID != opened.WorkerID {
				t.Errorf("shared state in KV: %+v (%v)", shared, err)
			}
		})
	}
}

func TestOperatorForcesBreakersOpenAndClosed(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.startWorker("w2", nil)
	changes := h.watchBreakers()
	api := newScripted(t, answer(200, `{"price": 3}`))
	h.deploy(httpWorkflow("quote", api.URL+"/quote", `"provider": "exchange",`))

	until := time.Now().Add(time.Hour).UTC()
	if err := h.client.OrderBreaker(h.ctx, &contract.BreakerOverride{
		Provider: "exchange", Action: contract.BreakerActionOpen, Reason: "exchange maintenance", IssuedBy: "ops", IssuedAt: time.Now().UTC(), Until: &until,
	}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w1", "w2"} {
		changes.wait(t, "operator open from "+w, func(m contract.BreakerState) bool {
			return m.WorkerID == w && m.Source == contract.BreakerSourceOperator && m.State == contract.BreakerOpen
		})
	}
	for range 4 {
		st, _ := h.runOnce("quote")
		if st.Error == nil || st.Error.Kind != contract.KindCircuitOpen || !strings.Contains(st.Error.Message, "exchange maintenance") {
			t.Fatalf("forced open: %s %+v", st.Status, st.Error)
		}
	}
	if n := len(api.hitTimes()); n != 0 {
		t.Fatalf("%d calls while forced open", n)
	}
	status, err := h.client.Breakers(h.ctx, "")
	if err != nil || len(status) != 1 || status[0].Override == nil || status[0].Override.Reason != "exchange maintenance" {
		t.Fatalf("status %+v (%v)", status, err)
	}

	if err := h.client.OrderBreaker(h.ctx, &contract.BreakerOverride{
		Provider: "exchange", Action: contract.BreakerActionClose, Reason: "maintenance over", IssuedBy: "ops", IssuedAt: time.Now().UTC(),
	}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w1", "w2"} {
		changes.wait(t, "operator close from "+w, func(m contract.BreakerState) bool {
			return m.WorkerID == w && m.Source == contract.BreakerSourceOperator && m.State == contract.BreakerClosed
		})
	}
	if st, _ := h.runOnce("quote"); st.Status != contract.StatusCompleted || len(api.hitTimes()) != 1 {
		t.Errorf("after close: %s %+v, %d calls", st.Status, st.Error, len(api.hitTimes()))
	}
}

func TestWorkerStartingDuringMaintenanceNeverCallsTheProvider(t *testing.T) {
	h := newHarness(t)
	stopW1 := h.startWorker("w1", nil)
	changes := h.watchBreakers()
	if err := h.client.OrderBreaker(h.ctx, &contract.BreakerOverride{
		Provider: "exchange", Action: contract.BreakerActionOpen, Reason: "maintenance", IssuedAt: time.Now().UTC(),
	}); err != nil {
		t.Fatal(err)
	}
	changes.wait(t, "w1 obeys", func(m contract.BreakerState) bool { return m.WorkerID == "w1" })
	stopW1()
	api := newScripted(t, answer(200, `{"price": 3}`))
	h.deploy(httpWorkflow("quote", api.URL+"/quote", `"provider": "exchange",`))
	h.startWorker("w2", nil) // reads the order when it starts
	for range 4 {
		if st, _ := h.runOnce("quote"); st.Error == nil || st.Error.Kind != contract.KindCircuitOpen {
			t.Fatalf("on %s: %s %+v", st.WorkerID, st.Status, st.Error)
		}
	}
	if n := len(api.hitTimes()); n != 0 {
		t.Errorf("%d calls during the maintenance window", n)
	}
}

func TestSecretsNeverReachEventsLogsOrKV(t *testing.T) {
	const secret = "sk_live_9f8e7d6c5b4a/+="
	t.Setenv("FLOWGUARD_TEST_API_KEY", secret)
	h := newHarness(t)
	logs := &lockedBuffer{}
	h.startWorkerLogging("w1", func(c *worker.Config) {
		exactRetries(c)
		c.Resilience.SecretEnv = []string{"FLOWGUARD_TEST_API_KEY@127.0.0.1"}
		c.Resilience.BreakerScope = contract.BreakerScopeCluster // breaker states go to KV too
		c.Resilience.Overrides.Breaker = resilience.BreakerSettings{Threshold: 2, OpenTime: time.Minute}
	}, zerolog.New(logs).Level(zerolog.DebugLevel))
	changes := h.watchBreakers()

	// The providers echo what they get: in the answer, in a header, in their errors.
	echo := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			data, _ := json.Marshal(map[string]any{"path": r.URL.Path, "query": r.URL.RawQuery, "key": r.Header.Get("X-Key"), "body": string(body)})
			w.Header().Set("X-Echo", r.Header.Get("X-Key"))
			answer(code, string(data))(w, r)
		}
	}
	signed := newScripted(t, echo(502), echo(200))
	broken := newScripted(t, echo(502))
	call := func(id, provider, url string, attempts int) string {
		return fmt.Sprintf(`{"id": %q, "nodes": [
			{"id": "call", "type": "http", "provider": %q, "retry": {"max_attempts": %d, "min_wait": "10ms"}, "config": {
				"method": "POST", "url": "%s/v1/${env:FLOWGUARD_TEST_API_KEY}/order",
				"query": {"signature": "${env:FLOWGUARD_TEST_API_KEY}"},
				"headers": {"X-Key": "${env:FLOWGUARD_TEST_API_KEY}"},
				"body": {"key": "${env:FLOWGUARD_TEST_API_KEY}", "qty": 1}}},
			{"id": "use", "type": "transform", "depends_on": ["call"], "config": {"outputs": {"echoed": "nodes.call.body.key"}}}]}`,
			id, provider, attempts, url)
	}
	h.deploy(call("signed", "signed_api", signed.URL, 2))
	h.deploy(call("broken", "broken_api", broken.URL, 1))

	if st, _ := h.runOnce("signed"); st.Status != contract.StatusCompleted {
		t.Fatalf("signed: %s %+v", st.Status, st.Error)
	}
	for range 2 {
		if st, _ := h.runOnce("broken"); st.Status != contract.StatusFailed {
			t.Fatalf("broken: %s", st.Status)
		}
	}
	changes.wait(t, "open", func(m contract.BreakerState) bool { return m.State == contract.BreakerOpen })

	// Everything the worker wrote: events, KV values, breaker messages, logs.
	var written []string
	for _, m := range h.messages(contract.StreamEvents, "flow.events.>") {
		written = append(written, string(m.Data()), fmt.Sprint(m.Headers()))
	}
	for _, bucket := range []string{contract.BucketState, contract.BucketBreakers} {
		kv, err := h.js.KeyValue(h.ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.ListKeys(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for key := range keys.Keys() {
			e, err := kv.Get(h.ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			written = append(written, key, string(e.Value()))
		}
	}
	changes.mu.Lock()
	for _, m := range changes.msgs {
		data, _ := json.Marshal(m)
		written = append(written, string(data))
	}
	changes.mu.Unlock()
	written = append(written, logs.String())

	all := strings.Join(written, "\n")
	for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret), "9f8e7d6c5b4a"} {
		if i := strings.Index(all, form); i >= 0 {
			t.Errorf("the secret (as %q) was written: ...%s...", form, all[max(0, i-200):min(len(all), i+100)])
		}
	}
	// The providers did echo it: what was written carries the redaction mark instead.
	for _, where := range []string{"node_retrying", "node_completed", "node_failed", "open_until", `"level":"warn"`} {
		if !strings.Contains(all, where) {
			t.Errorf("nothing written about %s: the test did not exercise it", where)
		}
	}
	if strings.Count(all, nodes.Redacted) < 5 {
		t.Errorf("expected the echoed secret to be redacted in several places:\n%s", all)
	}
}
