package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
)

// windowedAPI is a loopback provider that counts the calls it receives per window
// of its rate limit, aligned on the Unix epoch as the workers' budgets are.
type windowedAPI struct {
	*httptest.Server
	window time.Duration

	mu      sync.Mutex
	calls   map[int64]int
	arrived []time.Time
	// refuse, when set, answers the next call 429 with this Retry-After.
	refuse  string
	refused time.Time
}

func newWindowedAPI(t *testing.T, window time.Duration) *windowedAPI {
	api := &windowedAPI{window: window, calls: map[int64]int{}}
	api.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		api.mu.Lock()
		if api.refuse != "" {
			retry := api.refuse
			api.refuse, api.refused = "", now
			api.mu.Unlock()
			w.Header().Set("Retry-After", retry)
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		api.calls[now.UnixMilli()/window.Milliseconds()]++
		api.arrived = append(api.arrived, now)
		api.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(api.Close)
	return api
}

func (a *windowedAPI) snapshot() (calls map[int64]int, arrived []time.Time, refused time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	calls = make(map[int64]int, len(a.calls))
	for k, v := range a.calls {
		calls[k] = v
	}
	return calls, append([]time.Time(nil), a.arrived...), a.refused
}

// limitedWorkflow calls the provider api once; the node's rate limit fields are the second argument.
const limitedWorkflow = `{"id": %q, "timeout": "30s", "nodes": [
  {"id": "call", "type": "http", "provider": "api", "timeout": "5s", %s
   "retry": {"max_attempts": 3, "min_wait": "100ms"}, "config": {"url": "%s/x"}}]}`

// TestFleetRateLimitHoldsAcrossWorkerProcesses offers 1,000 calls as fast as
// possible to 3 worker processes sharing a budget of 100 calls per 2 s.
func TestFleetRateLimitHoldsAcrossWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	const limit, calls = 100, 1000
	h := newHarness(t)
	api := newWindowedAPI(t, 2*time.Second)
	limits := filepath.Join(t.TempDir(), "rate-limits.json")
	// The margin covers the time from a call's admission to its arrival on a busy machine.
	if err := os.WriteFile(limits, []byte(fmt.Sprintf(`{"api": {"budgets": [{"name": "calls", "limit": %d, "window": "2s", "margin": "500ms"}]}}`, limit)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A threshold of 1: a single wait counted against the breaker would open it.
	f := newFleet(t, h.srv.URL(), "--egress-allow", "127.0.0.1", "--rate-limits", limits, "--breaker-threshold", "1", "--concurrency", "32")
	procs := []*proc{f.start("w1"), f.start("w2"), f.start("w3")}
	h.deploy(fmt.Sprintf(limitedWorkflow, "limited", `"weight": 1, "budgets": ["calls"],`, api.URL))

	ids := submitMany(h, "limited", "c", calls)
	completed, limited := 0, 0
	for _, id := range ids {
		st := h.waitStatus("limited", id, 3*time.Minute)
		switch {
		case st.Status == contract.StatusCompleted:
			completed++
		case st.Error != nil && st.Error.Kind == contract.KindRateLimited:
			limited++
		default:
			t.Errorf("%s: %s %+v; want completed or rate_limited", id, st.Status, st.Error)
		}
	}
	perWindow, _, _ := api.snapshot()
	total := 0
	for w, n := range perWindow {
		total += n
		if n > limit {
			t.Errorf("window %d received %d calls, over the budget of %d", w, n, limit)
		}
	}
	if total != completed {
		t.Errorf("the provider received %d calls for %d completed executions", total, completed)
	}
	waits := len(h.messages(contract.StreamEvents, "flow.events.*.limited.*."+contract.NodeWaiting))
	t.Logf("%d calls: %d completed, %d rate_limited, over %d windows; %d node_waiting events", calls, completed, limited, len(perWindow), waits)
	if waits == 0 {
		t.Error("no node_waiting event: 1,000 calls at 100 per window must wait")
	}
	for i, p := range procs {
		if out := p.out.String(); strings.Contains(out, "circuit breaker opened") {
			t.Errorf("worker w%d opened a breaker: waiting must never count against it", i+1)
		}
	}
}

// TestA429PausesTheProviderForEveryWorker: the provider answers 429 with
// Retry-After: 2 to one worker's call; no worker calls it again for 2 s.
func TestA429PausesTheProviderForEveryWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	api := newWindowedAPI(t, time.Second)
	api.refuse = "2"
	f := newFleet(t, h.srv.URL(), "--egress-allow", "127.0.0.1") // the provider is on loopback
	procs := []*proc{f.start("w1"), f.start("w2"), f.start("w3")}
	h.deploy(fmt.Sprintf(limitedWorkflow, "paused", "", api.URL))

	first := h.submit(&contract.Request{WorkflowID: "paused", RequestID: "first"})
	// Every worker has the pause once two of them logged it from the bucket and
	// the third received the 429 itself.
	natstest.WaitFor(t, 30*time.Second, func() error {
		heard := 0
		for _, p := range procs {
			if strings.Contains(p.out.String(), "provider paused for the fleet") {
				heard++
			}
		}
		if heard < 2 {
			return fmt.Errorf("%d workers heard of the pause", heard)
		}
		return nil
	})
	var ids []string
	for i := range 30 {
		ids = append(ids, h.submit(&contract.Request{WorkflowID: "paused", RequestID: fmt.Sprintf("after-%02d", i)}))
	}
	for _, id := range append(ids, first) {
		if st := h.waitStatus("paused", id, time.Minute); st.Status != contract.StatusCompleted {
			t.Errorf("%s: %s %+v", id, st.Status, st.Error)
		}
	}
	_, arrived, refused := api.snapshot()
	if refused.IsZero() {
		t.Fatal("the provider never answered 429")
	}
	for _, at := range arrived {
		if at.Before(refused.Add(2 * time.Second)) {
			t.Errorf("a call arrived %s after the 429 that asked for 2s", at.Sub(refused))
		}
	}
	if len(arrived) != len(ids)+1 {
		t.Errorf("%d calls arrived, want %d", len(arrived), len(ids)+1)
	}
	if len(h.messages(contract.StreamEvents, "flow.events.*.paused.*."+contract.NodeWaiting)) == 0 {
		t.Error("no node_waiting event while the provider was paused")
	}
}
