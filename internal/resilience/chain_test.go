package resilience

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// transientErr, permanentErr and unrepeatableErr stand for a node's classified
// failures; unrepeatableErr is transient, but the call may have taken effect.
var (
	transientErr    = errors.New("HTTP 503 from the provider")
	permanentErr    = errors.New("HTTP 400 from the provider")
	unrepeatableErr = errors.New("HTTP 502 after a POST")
)

// waitAfter is a failure that asks for a wait, like an HTTP 429 with Retry-After.
type waitAfter struct{ d time.Duration }

func (w *waitAfter) Error() string { return "HTTP 429: slow down" }

// instantTimer fires at once and records the delays it was asked for, so that
// schedules are checked without waiting.
type instantTimer struct {
	mu     *sync.Mutex
	delays *[]time.Duration
	c      chan time.Time
}

func (t *instantTimer) Start(d time.Duration) {
	t.mu.Lock()
	*t.delays = append(*t.delays, d)
	t.mu.Unlock()
	t.c <- time.Time{}
}
func (t *instantTimer) Stop()               {}
func (t *instantTimer) C() <-chan time.Time { return t.c }

// fixture is a chain with a recording timer and a recording state listener.
type fixture struct {
	chain *Chain

	mu      sync.Mutex
	delays  []time.Duration
	changes []StateChange
}

func testSettings() Settings {
	return Settings{
		Timeout: time.Second,
		Retry:   RetrySettings{MaxAttempts: 1, MinWait: time.Second, MaxWait: 4 * time.Second, Multiplier: 2},
		Breaker: BreakerSettings{Threshold: 100, OpenTime: time.Hour},
	}
}

func newFixture(t testing.TB, s Settings) *fixture {
	t.Helper()
	f := &fixture{}
	chain, err := New(Options{
		Settings: s,
		Transient: func(err error) bool {
			return errors.Is(err, transientErr) || errors.Is(err, unrepeatableErr) || errors.As(err, new(*waitAfter))
		},
		Unrepeatable: func(err error) bool { return errors.Is(err, unrepeatableErr) },
		RetryAfter: func(err error) time.Duration {
			if w, ok := errors.AsType[*waitAfter](err); ok {
				return w.d
			}
			return 0
		},
		OnStateChange: func(c StateChange) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.changes = append(f.changes, c)
		},
		NewTimer: func() Timer { return &instantTimer{mu: &f.mu, delays: &f.delays, c: make(chan time.Time, 1)} },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.chain = chain
	return f
}

func (f *fixture) call(retry RetrySettings) Call {
	return Call{Provider: "exchange", Timeout: time.Second, Retry: retry}
}

func (f *fixture) recorded() ([]time.Duration, []StateChange) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.delays), slices.Clone(f.changes)
}

// script returns an op failing with errs in turn, then succeeding, and a counter of its calls.
func script(errs ...error) (func(context.Context, int) error, *int) {
	var mu sync.Mutex
	calls := 0
	return func(context.Context, int) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= len(errs) {
			return errs[calls-1]
		}
		return nil
	}, &calls
}

func TestTransientFailuresAreRetriedOnTheBackoffSchedule(t *testing.T) {
	f := newFixture(t, testSettings())
	op, calls := script(transientErr, transientErr, transientErr, transientErr)
	var retries []int
	call := f.call(RetrySettings{MaxAttempts: 5, MinWait: time.Second, MaxWait: 4 * time.Second, Multiplier: 2})
	call.OnRetry = func(attempt int, delay time.Duration, err error) {
		if !errors.Is(err, transientErr) {
			t.Errorf("retry %d reported error %v", attempt, err)
		}
		retries = append(retries, attempt)
	}
	attempts, err := f.chain.Do(context.Background(), call, op)
	if err != nil || attempts != 5 || *calls != 5 {
		t.Fatalf("attempts %d, calls %d, err %v; want success on attempt 5", attempts, *calls, err)
	}
	delays, _ := f.recorded()
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}; !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v (exponential, capped at max wait)", delays, want)
	}
	if !slices.Equal(retries, []int{2, 3, 4, 5}) {
		t.Errorf("OnRetry attempts %v, want 2 3 4 5", retries)
	}
}

func TestJitterKeepsDelaysWithinTheirBounds(t *testing.T) {
	f := newFixture(t, testSettings())
	retry := RetrySettings{MaxAttempts: 5, MinWait: time.Second, MaxWait: 4 * time.Second, Multiplier: 2, Jitter: 0.5}
	for range 50 {
		op, _ := script(transientErr, transientErr, transientErr, transientErr)
		if _, err := f.chain.Do(context.Background(), f.call(retry), op); err != nil {
			t.Fatal(err)
		}
	}
	delays, _ := f.recorded()
	bases := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	distinct := map[time.Duration]bool{}
	for i, d := range delays {
		base := bases[i%4]
		lo, hi := max(time.Second, base/2), min(4*time.Second, base*3/2)
		if d < lo || d > hi {
			t.Errorf("retry %d waited %s, want within [%s, %s]", i%4+1, d, lo, hi)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Errorf("only %d distinct delays in %d: jitter is not applied", len(distinct), len(delays))
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	f := newFixture(t, testSettings())
	op, calls := script(permanentErr)
	attempts, err := f.chain.Do(context.Background(), f.call(RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: time.Second, Multiplier: 2}), op)
	if !errors.Is(err, permanentErr) || attempts != 1 || *calls != 1 {
		t.Fatalf("attempts %d, calls %d, err %v; want one attempt failing with the permanent error", attempts, *calls, err)
	}
	var gaveUp *GaveUpError
	if errors.As(err, &gaveUp) {
		t.Errorf("a permanent failure is reported as retries exhausted: %v", err)
	}
}

func TestRetryAfterRaisesTheWait(t *testing.T) {
	f := newFixture(t, testSettings())
	op, _ := script(&waitAfter{d: 7 * time.Second}, &waitAfter{d: 10 * time.Millisecond})
	attempts, err := f.chain.Do(context.Background(), f.call(RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: 4 * time.Second, Multiplier: 2}), op)
	if err != nil || attempts != 3 {
		t.Fatalf("attempts %d, err %v", attempts, err)
	}
	delays, _ := f.recorded()
	// A Retry-After longer than the backoff wins, even past max wait; a shorter one
	// does not shorten the backoff.
	if want := []time.Duration{7 * time.Second, 2 * time.Second}; !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	f := newFixture(t, testSettings())
	op, calls := script(transientErr, transientErr, transientErr, transientErr)
	attempts, err := f.chain.Do(context.Background(), f.call(RetrySettings{MaxAttempts: 2, MinWait: time.Second, MaxWait: time.Second, Multiplier: 2}), op)
	var gaveUp *GaveUpError
	if !errors.As(err, &gaveUp) || gaveUp.Attempts != 2 || gaveUp.Deadline || !errors.Is(err, transientErr) || attempts != 2 || *calls != 2 {
		t.Fatalf("attempts %d, calls %d, err %v; want GaveUpError after 2", attempts, *calls, err)
	}
}

func TestStopsRatherThanWaitPastTheDeadline(t *testing.T) {
	f := newFixture(t, testSettings())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	op, calls := script(transientErr, transientErr, transientErr, transientErr, transientErr, transientErr, transientErr)
	// The timer fires at once, so no time passes: a wait of 20s fits in the 30s
	// left, one of 40s would not.
	attempts, err := f.chain.Do(ctx, f.call(RetrySettings{MaxAttempts: 10, MinWait: 20 * time.Second, MaxWait: time.Hour, Multiplier: 2}), op)
	var gaveUp *GaveUpError
	if !errors.As(err, &gaveUp) || !gaveUp.Deadline || attempts != 2 || *calls != 2 {
		t.Fatalf("attempts %d, calls %d, err %v; want to give up after 2 because of the deadline", attempts, *calls, err)
	}
	if delays, _ := f.recorded(); !slices.Equal(delays, []time.Duration{20 * time.Second}) {
		t.Errorf("delays %v", delays)
	}
}

func TestAttemptTimeoutIsRetriedAndCountsAsFailure(t *testing.T) {
	s := testSettings()
	s.Breaker.Threshold = 2
	f := newFixture(t, s)
	slow := func(ctx context.Context, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	}
	call := Call{Provider: "slow", Timeout: 10 * time.Millisecond, Retry: RetrySettings{MaxAttempts: 2, MinWait: time.Millisecond, MaxWait: time.Millisecond, Multiplier: 1}}
	attempts, err := f.chain.Do(context.Background(), call, slow)
	var timeout *TimeoutError
	if attempts != 2 || !errors.Is(err, ErrAttemptTimeout) || !errors.As(err, &timeout) || timeout.Timeout != 10*time.Millisecond {
		t.Fatalf("attempts %d, err %v; want two timed-out attempts", attempts, err)
	}
	if st := f.chain.Breakers().State("slow"); st != StateOpen {
		t.Errorf("breaker %s after 2 timeouts with threshold 2, want open", st)
	}
}

func TestUnrepeatableFailureCountsButIsNotRetried(t *testing.T) {
	s := testSettings()
	s.Breaker.Threshold = 2
	f := newFixture(t, s)
	retry := RetrySettings{MaxAttempts: 3, MinWait: time.Millisecond, MaxWait: time.Millisecond, Multiplier: 1}
	op, calls := script(unrepeatableErr)
	attempts, err := f.chain.Do(context.Background(), f.call(retry), op)
	if attempts != 1 || *calls != 1 || !errors.Is(err, unrepeatableErr) {
		t.Fatalf("attempts %d, calls %d, err %v; want one attempt", attempts, *calls, err)
	}
	// A timed-out attempt that may have taken effect is not repeated either.
	slow := func(ctx context.Context, _ int) error {
		<-ctx.Done()
		return fmt.Errorf("%w: %w", unrepeatableErr, ctx.Err())
	}
	call := f.call(retry)
	call.Timeout = 10 * time.Millisecond
	attempts, err = f.chain.Do(context.Background(), call, slow)
	if attempts != 1 || !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("attempts %d, err %v; want one timed-out attempt", attempts, err)
	}
	if st := f.chain.Breakers().State("exchange"); st != StateOpen {
		t.Errorf("breaker %s after 2 unrepeatable failures with threshold 2, want open", st)
	}
}

func TestCanceledCallIsNeitherRetriedNorCounted(t *testing.T) {
	f := newFixture(t, testSettings())
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		op := func(ctx context.Context, _ int) error {
			cancel() // the execution is halted mid-call
			return transientErr
		}
		attempts, err := f.chain.Do(ctx, f.call(RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: time.Second, Multiplier: 2}), op)
		if attempts != 1 || err == nil {
			t.Fatalf("attempts %d, err %v; want one attempt", attempts, err)
		}
	}
	if st := f.chain.Breakers().State("exchange"); st != StateClosed {
		t.Errorf("breaker %s after canceled calls, want closed", st)
	}
}

func TestCanceledDuringWaitStopsAtOnce(t *testing.T) {
	chain, err := New(Options{Settings: testSettings(), Transient: func(error) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, _ := script(transientErr)
	call := Call{Provider: "p", Timeout: time.Second, Retry: RetrySettings{MaxAttempts: 3, MinWait: time.Hour, MaxWait: time.Hour, Multiplier: 2}}
	call.OnRetry = func(int, time.Duration, error) { cancel() } // halted while waiting an hour
	done := make(chan error, 1)
	go func() {
		_, err := chain.Do(ctx, call, op)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the retry wait ignored the canceled context")
	}
}

func TestSettingsValidate(t *testing.T) {
	if _, err := New(Options{Settings: Settings{}}); !errors.Is(err, ErrInvalidSettings) {
		t.Errorf("zero settings: err %v, want ErrInvalidSettings", err)
	}
	s := testSettings()
	s.Retry.MaxWait = time.Millisecond
	if err := s.Validate(); !errors.Is(err, ErrInvalidSettings) {
		t.Errorf("max wait below min wait: err %v", err)
	}
}
