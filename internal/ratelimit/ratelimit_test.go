package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/resilience"
)

// fleet starts a server and n limiters, each on its own connection, watching the bucket.
func fleet(t testing.TB, n int, budgets map[string]contract.RateLimits) ([]*Limiter, *provision.Buckets, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	buckets, err := provision.Ensure(ctx, js, provision.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*Limiter
	for i := range n {
		nc := natstest.Connect(t, srv.URL())
		njs, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		kv, err := njs.KeyValue(ctx, contract.BucketRateLimits)
		if err != nil {
			t.Fatal(err)
		}
		l, err := New(nc, kv, Config{WorkerID: "w" + strconv.Itoa(i), Subjects: contract.Subjects{Prefix: "flow"}, Budgets: budgets}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		w, err := l.Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go l.Run(ctx, w)
		out = append(out, l)
	}
	return out, buckets, js
}

func TestAdmitNeverExceedsTheBudgetAcrossWorkers(t *testing.T) {
	const limit, calls = 20, 90
	budgets := map[string]contract.RateLimits{"ex": {Budgets: []contract.Budget{{Name: "w", Limit: limit, Window: "1s", Margin: "0s"}}}}
	limiters, _, js := fleet(t, 3, budgets)
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			err := limiters[i%3].Admit(context.Background(), 30*time.Second, resilience.Admission{Provider: "ex", Weight: 1 + int64(i%2)})
			switch {
			case err == nil:
				admitted.Add(1 + int64(i%2))
			case errors.Is(err, resilience.ErrRateLimited):
				refused.Add(1)
			default:
				t.Errorf("admit: %v", err)
			}
		})
	}
	wg.Wait()
	if refused.Load() != 0 {
		t.Errorf("%d calls refused; with 30s each, every call fits in a later window", refused.Load())
	}
	// Every window's counter is what was admitted in it: weights taken back are gone.
	s, err := js.Stream(context.Background(), contract.StreamRateLimits)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("flow.ratelimit.>"))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for subject := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(context.Background(), subject)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Val string }
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(v.Val, 10, 64)
		if n > limit {
			t.Errorf("window %s admitted %d, over the limit %d", subject, n, limit)
		}
		total += n
	}
	if total != admitted.Load() {
		t.Errorf("counters hold %d, but %d weight was admitted", total, admitted.Load())
	}
}

func TestAdmitRefuses(t *testing.T) {
	budgets := map[string]contract.RateLimits{"ex": {Budgets: []contract.Budget{
		{Name: "weight", Limit: 5, Window: "1m"}, {Name: "orders", Limit: 1, Window: "1h"}}}}
	limiters, _, _ := fleet(t, 1, budgets)
	l := limiters[0]
	// Mid-window, whatever the time the test runs: nothing here waits.
	now := time.Date(2026, 11, 30, 8, 30, 10, 0, time.UTC)
	l.now = func() time.Time { return now }
	ctx := context.Background()
	if err := l.Admit(ctx, time.Minute, resilience.Admission{Provider: "free"}); err != nil {
		t.Errorf("a provider without budgets: %v", err)
	}
	cases := map[string]resilience.Admission{
		"weight over the limit": {Provider: "ex", Weight: 6, Budgets: []string{"weight"}},
		"unknown budget":        {Provider: "ex", Weight: 1, Budgets: []string{"nope"}},
	}
	for name, a := range cases {
		if err := l.Admit(ctx, time.Minute, a); !errors.Is(err, resilience.ErrRateLimited) {
			t.Errorf("%s: %v, want rate limited", name, err)
		}
	}
	if err := l.Admit(ctx, time.Minute, resilience.Admission{Provider: "ex", Weight: 1}); err != nil {
		t.Fatalf("first order: %v", err)
	}
	waited := false
	err := l.Admit(ctx, time.Minute, resilience.Admission{Provider: "ex", Weight: 1, OnWait: func(time.Time, string) { waited = true }})
	if !errors.Is(err, resilience.ErrRateLimited) || waited {
		t.Errorf("second order within the hour: %v (waited %v), want refused at once: its window ends past the deadline", err, waited)
	}
	if err := l.Admit(ctx, time.Minute, resilience.Admission{Provider: "ex", Weight: 4, Budgets: []string{"weight"}}); err != nil {
		t.Errorf("the rest of the weight budget, without the orders budget: %v", err)
	}
}

func TestBackoffPausesTheFleet(t *testing.T) {
	limiters, buckets, _ := fleet(t, 2, nil)
	until := time.Now().Add(1500 * time.Millisecond)
	limiters[0].Backoff("ex", until, "HTTP 429")
	natstest.WaitFor(t, 10*time.Second, func() error {
		limiters[1].mu.RLock()
		_, ok := limiters[1].pauses["ex"]
		limiters[1].mu.RUnlock()
		if !ok {
			return errors.New("the other worker has not seen the pause")
		}
		return nil
	})
	if _, err := buckets.RateLimits.Get(context.Background(), contract.RatePauseKey("ex")); err != nil {
		t.Errorf("pause not in the bucket: %v", err)
	}
	var waitedUntil time.Time
	err := limiters[1].Admit(context.Background(), 30*time.Second, resilience.Admission{Provider: "ex", Weight: 1,
		OnWait: func(u time.Time, _ string) { waitedUntil = u }})
	if err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(until) || waitedUntil.Before(until) {
		t.Errorf("admitted at %s, waited until %s; the pause lasts until %s", now, waitedUntil, until)
	}
	err = limiters[0].Admit(context.Background(), time.Millisecond, resilience.Admission{Provider: "ex", Weight: 1})
	if err != nil {
		t.Errorf("after the pause: %v", err)
	}
	limiters[0].Backoff("ex", time.Now().Add(time.Hour), "HTTP 418")
	if err := limiters[0].Admit(context.Background(), time.Second, resilience.Admission{Provider: "ex", Weight: 1}); !errors.Is(err, resilience.ErrRateLimited) {
		t.Errorf("a ban past the deadline: %v, want rate limited", err)
	}
}

func TestParse(t *testing.T) {
	if _, err := Parse([]byte(`{"binance": {"budgets": [{"name": "weight", "limit": 1200, "window": "1m"}, {"name": "orders", "limit": 50, "window": "10s", "margin": "200ms"}]}}`)); err != nil {
		t.Errorf("valid: %v", err)
	}
	for _, bad := range []string{
		`{"binance": {"budgets": [{"name": "w", "limit": 0, "window": "1m"}]}}`,
		`{"binance": {"budgets": [{"name": "w", "limit": 1, "window": "500ms"}]}}`,
		`{"binance": {"budgets": [{"name": "w", "limit": 1, "window": "1m"}, {"name": "w", "limit": 2, "window": "1h"}]}}`,
		`{"binance": {"budgets": [{"name": "w", "limit": 1, "window": "1m", "margin": "40s"}]}}`,
		`{"bin.ance": {"budgets": []}}`,
		`{"binance": {"budget": []}}`,
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalidBudgets) {
			t.Errorf("%s: %v, want invalid", bad, err)
		}
	}
}

func TestBudgetsEditedLiveReplaceTheFiles(t *testing.T) {
	file := map[string]contract.RateLimits{"ex": {Budgets: []contract.Budget{{Name: "w", Limit: 1000, Window: "1h"}}}}
	limiters, buckets, _ := fleet(t, 2, file)
	ctx := context.Background()
	if _, err := buckets.RateLimits.Put(ctx, contract.RateBudgetsKey("ex"), []byte(`{"budgets": [{"name": "w", "limit": 1, "window": "1h"}]}`)); err != nil {
		t.Fatal(err)
	}
	a := resilience.Admission{Provider: "ex", Weight: 2}
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, l := range limiters {
			if err := l.Admit(ctx, time.Second, a); !errors.Is(err, resilience.ErrRateLimited) {
				return fmt.Errorf("weight 2 against the bucket's limit of 1: %v", err)
			}
		}
		return nil
	})
	if _, err := buckets.RateLimits.Put(ctx, contract.RateBudgetsKey("ex"), []byte(`{"budgets": [{"name": "w", "limit": -5, "window": "1h"}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := buckets.RateLimits.Delete(ctx, contract.RateBudgetsKey("ex")); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, l := range limiters {
			if err := l.Admit(ctx, 5*time.Second, a); err != nil {
				return fmt.Errorf("after the bucket's budgets were deleted, the file's apply: %v", err)
			}
		}
		return nil
	})
}
