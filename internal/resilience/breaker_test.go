package resilience

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/natstest"
)

// waitState polls a provider's breaker until it reaches want.
func waitState(t *testing.T, bs *Breakers, provider string, want State) {
	t.Helper()
	natstest.WaitFor(t, 5*time.Second, func() error {
		if got := bs.State(provider); got != want {
			return fmt.Errorf("breaker of %s is %s, want %s", provider, got, want)
		}
		return nil
	})
}

func threshold3() Settings {
	s := testSettings()
	s.Breaker.Threshold = 3
	return s
}

func once() RetrySettings {
	return RetrySettings{MaxAttempts: 1, MinWait: time.Millisecond, MaxWait: time.Millisecond, Multiplier: 1}
}

func transitions(changes []StateChange) string {
	var parts []string
	for _, c := range changes {
		parts = append(parts, fmt.Sprintf("%s:%s->%s", c.Provider, c.From, c.To))
	}
	return strings.Join(parts, " ")
}

func TestBreakerOpensAtThresholdAndFailsFast(t *testing.T) {
	f := newFixture(t, threshold3())
	fail, calls := script(transientErr, transientErr, transientErr, transientErr)
	for i := range 3 {
		if _, err := f.chain.Do(context.Background(), f.call(once()), fail); !errors.Is(err, transientErr) {
			t.Fatalf("call %d: err %v", i+1, err)
		}
	}
	attempts, err := f.chain.Do(context.Background(), f.call(once()), fail)
	if !errors.Is(err, ErrCircuitOpen) || attempts != 1 || *calls != 3 {
		t.Fatalf("4th call: attempts %d, provider calls %d, err %v; want refused without a call", attempts, *calls, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "3 consecutive failed attempts") || !strings.Contains(msg, transientErr.Error()) || !strings.Contains(msg, "probe goes through at") {
		t.Errorf("refusal should say why and when calls resume: %s", msg)
	}
	_, changes := f.recorded()
	if len(changes) != 1 || changes[0].To != StateOpen || changes[0].LastError != transientErr.Error() || changes[0].Until.IsZero() {
		t.Errorf("state changes %+v, want one opening with its last error and probe time", changes)
	}
}

func TestEveryFailedAttemptCounts(t *testing.T) {
	f := newFixture(t, threshold3())
	op, calls := script(transientErr, transientErr, transientErr, transientErr, transientErr)
	attempts, err := f.chain.Do(context.Background(), f.call(RetrySettings{MaxAttempts: 5, MinWait: time.Millisecond, MaxWait: time.Millisecond, Multiplier: 1}), op)
	// Attempts 1-3 fail and open the breaker; attempt 4 is refused; no 5th.
	if !errors.Is(err, ErrCircuitOpen) || attempts != 4 || *calls != 3 {
		t.Fatalf("attempts %d, provider calls %d, err %v", attempts, *calls, err)
	}
}

func TestOnlyTransientFailuresCount(t *testing.T) {
	f := newFixture(t, threshold3())
	for range 10 {
		op, _ := script(permanentErr)
		_, _ = f.chain.Do(context.Background(), f.call(once()), op)
	}
	if st := f.chain.Breakers().State("exchange"); st != StateClosed {
		t.Fatalf("breaker %s after permanent failures, want closed", st)
	}
	// A success resets the consecutive count.
	for _, errs := range [][]error{{transientErr}, {transientErr}, nil, {transientErr}, {transientErr}} {
		op, _ := script(errs...)
		_, _ = f.chain.Do(context.Background(), f.call(once()), op)
	}
	if st := f.chain.Breakers().State("exchange"); st != StateClosed {
		t.Errorf("breaker %s after 2 failures, a success and 2 failures, want closed", st)
	}
}

func TestBreakerRecoversThroughHalfOpen(t *testing.T) {
	s := threshold3()
	s.Breaker.OpenTime = 50 * time.Millisecond
	f := newFixture(t, s)
	bs := f.chain.Breakers()
	trip := func() {
		for range 3 {
			op, _ := script(transientErr)
			_, _ = f.chain.Do(context.Background(), f.call(once()), op)
		}
	}
	trip()
	waitState(t, bs, "exchange", StateHalfOpen)

	// A failed probe opens it again.
	op, calls := script(transientErr)
	if _, err := f.chain.Do(context.Background(), f.call(once()), op); !errors.Is(err, transientErr) || *calls != 1 {
		t.Fatalf("probe: calls %d, err %v; want the probe to be made and fail", *calls, err)
	}
	if st := bs.State("exchange"); st != StateOpen {
		t.Fatalf("breaker %s after a failed probe, want open", st)
	}
	waitState(t, bs, "exchange", StateHalfOpen)

	// While a probe is in flight, other calls are refused.
	probing, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := f.chain.Do(context.Background(), f.call(once()), func(context.Context, int) error {
			close(probing)
			<-release
			return nil
		})
		done <- err
	}()
	<-probing
	other, otherCalls := script()
	if _, err := f.chain.Do(context.Background(), f.call(once()), other); !errors.Is(err, ErrCircuitOpen) || *otherCalls != 0 || !strings.Contains(err.Error(), "probe") {
		t.Errorf("call during the probe: calls %d, err %v; want refused", *otherCalls, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if st := bs.State("exchange"); st != StateClosed {
		t.Errorf("breaker %s after a successful probe, want closed", st)
	}
	_, changes := f.recorded()
	want := "exchange:closed->open exchange:open->half_open exchange:half_open->open exchange:open->half_open exchange:half_open->closed"
	if got := transitions(changes); got != want {
		t.Errorf("changes %s\nwant    %s", got, want)
	}
}

func TestBreakersAreSharedPerProvider(t *testing.T) {
	f := newFixture(t, threshold3())
	// Three different calls (executions) of provider a open its breaker together.
	for range 3 {
		op, _ := script(transientErr)
		_, _ = f.chain.Do(context.Background(), Call{Provider: "a", Timeout: time.Second, Retry: once()}, op)
	}
	op, calls := script()
	if _, err := f.chain.Do(context.Background(), Call{Provider: "a", Timeout: time.Second, Retry: once()}, op); !errors.Is(err, ErrCircuitOpen) || *calls != 0 {
		t.Errorf("provider a: err %v", err)
	}
	if _, err := f.chain.Do(context.Background(), Call{Provider: "b", Timeout: time.Second, Retry: once()}, op); err != nil || *calls != 1 {
		t.Errorf("provider b is independent: err %v, calls %d", err, *calls)
	}
}

func TestHoldsRefuseCallsAndResetCloses(t *testing.T) {
	f := newFixture(t, threshold3())
	bs := f.chain.Breakers()
	op, calls := script()

	bs.Force("exchange", &Hold{Why: "forced open by an operator: maintenance"})
	if _, err := f.chain.Do(context.Background(), f.call(once()), op); !errors.Is(err, ErrCircuitOpen) || !strings.Contains(err.Error(), "maintenance") || *calls != 0 {
		t.Fatalf("forced open: err %v, calls %d", err, *calls)
	}
	bs.Force("exchange", nil)
	bs.Follow("exchange", &Hold{Why: "open on worker w2", Until: time.Now().Add(time.Hour)})
	if _, err := f.chain.Do(context.Background(), f.call(once()), op); !errors.Is(err, ErrCircuitOpen) || !strings.Contains(err.Error(), "w2") || *calls != 0 {
		t.Fatalf("cluster hold: err %v, calls %d", err, *calls)
	}
	bs.Follow("exchange", &Hold{Why: "open on worker w2", Until: time.Now().Add(-time.Second)})
	if _, err := f.chain.Do(context.Background(), f.call(once()), op); err != nil || *calls != 1 {
		t.Fatalf("expired hold: err %v, calls %d", err, *calls)
	}

	for range 3 {
		fail, _ := script(transientErr)
		_, _ = f.chain.Do(context.Background(), f.call(once()), fail)
	}
	if st := bs.State("exchange"); st != StateOpen {
		t.Fatalf("breaker %s, want open", st)
	}
	if from := bs.Reset("exchange"); from != StateOpen {
		t.Errorf("reset replaced a %s breaker, want open", from)
	}
	if _, err := f.chain.Do(context.Background(), f.call(once()), op); err != nil || *calls != 2 {
		t.Fatalf("after reset: err %v, calls %d", err, *calls)
	}
}

func TestProfilesMatchTheContract(t *testing.T) {
	want := map[string][5]any{ // attempts, min wait, max wait, threshold, open time
		Development: {2, time.Second, 60 * time.Second, uint32(5), 60 * time.Second},
		Staging:     {3, time.Second, 60 * time.Second, uint32(5), 60 * time.Second},
		Production:  {3, time.Second, 120 * time.Second, uint32(10), 120 * time.Second},
	}
	for _, name := range Profiles() {
		s, err := Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		got := [5]any{s.Retry.MaxAttempts, s.Retry.MinWait, s.Retry.MaxWait, s.Breaker.Threshold, s.Breaker.OpenTime}
		if got != want[name] || s.Timeout != 30*time.Second || s.Retry.Multiplier != 2 {
			t.Errorf("profile %s = %v, timeout %s, multiplier %g; want %v, 30s, 2", name, got, s.Timeout, s.Retry.Multiplier, want[name])
		}
		if err := s.Validate(); err != nil {
			t.Errorf("profile %s: %v", name, err)
		}
	}
	if _, err := Profile("prod"); !errors.Is(err, ErrInvalidSettings) || !strings.Contains(err.Error(), "production") {
		t.Errorf("unknown profile: %v", err)
	}
}

func TestOverride(t *testing.T) {
	s, _ := Profile(Production)
	got := s.Override(Settings{Timeout: 5 * time.Second, Retry: RetrySettings{MaxAttempts: 7}, Breaker: BreakerSettings{Threshold: 2}})
	if got.Timeout != 5*time.Second || got.Retry.MaxAttempts != 7 || got.Retry.MaxWait != 120*time.Second || got.Breaker.Threshold != 2 || got.Breaker.OpenTime != 120*time.Second {
		t.Errorf("override: %+v", got)
	}
	// A node asking for a first wait above the max wait gets it.
	if r := s.Retry.Override(RetrySettings{MinWait: 5 * time.Minute}); r.MinWait != 5*time.Minute || r.MaxWait != 5*time.Minute {
		t.Errorf("min wait above max: %+v", r)
	}
}

func TestWithTimeoutTellsTimeoutFromCancellation(t *testing.T) {
	block := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	err := WithTimeout(context.Background(), 5*time.Millisecond, block)
	if !errors.Is(err, ErrAttemptTimeout) || !strings.Contains(err.Error(), "5ms") {
		t.Errorf("timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WithTimeout(ctx, time.Hour, block); errors.Is(err, ErrAttemptTimeout) || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}
