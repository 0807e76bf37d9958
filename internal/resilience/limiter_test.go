package resilience

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// scriptedLimiter refuses the admissions it is told to, and records what it hears.
type scriptedLimiter struct {
	mu       sync.Mutex
	refuse   int // admissions to refuse, first ones first
	admitted int
	backoffs []string
}

func (l *scriptedLimiter) Admit(_ context.Context, _ time.Duration, a Admission) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refuse > 0 {
		l.refuse--
		return &RateLimitedError{Provider: a.Provider, Why: "budget used up"}
	}
	l.admitted++
	return nil
}

func (l *scriptedLimiter) Backoff(provider string, _ time.Time, _ string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.backoffs = append(l.backoffs, provider)
}

func TestChainAsksTheLimiterBeforeEachAttemptOutsideTheBreaker(t *testing.T) {
	s := testSettings()
	s.Breaker.Threshold = 1
	f := newFixture(t, s)
	lim := &scriptedLimiter{refuse: 3}
	f.chain.limiter = lim
	call := f.call(RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: time.Second, Multiplier: 1})
	call.Admission = &Admission{Provider: "exchange", Weight: 1}

	// Refusals are not failures: with a threshold of 1, a counted one would open the breaker.
	for range 3 {
		op, calls := script()
		if _, err := f.chain.Do(context.Background(), call, op); !errors.Is(err, ErrRateLimited) || *calls != 0 {
			t.Fatalf("refused call: %v after %d calls, want ErrRateLimited and no call", err, *calls)
		}
	}
	if st := f.chain.Breakers().State("exchange"); st != StateClosed {
		t.Fatalf("breaker %s after refusals, want closed", st)
	}
	// A 429 asking for a wait is told to the limiter; the retry is admitted again.
	f = newFixture(t, testSettings())
	lim = &scriptedLimiter{}
	f.chain.limiter = lim
	op, calls := script(&waitAfter{d: 2 * time.Second})
	if _, err := f.chain.Do(context.Background(), call, op); err != nil || *calls != 2 {
		t.Fatalf("429 then success: %v after %d calls", err, *calls)
	}
	if lim.admitted != 2 || len(lim.backoffs) != 1 || lim.backoffs[0] != "exchange" {
		t.Errorf("admitted %d, backoffs %v; want both attempts admitted and the 429 told", lim.admitted, lim.backoffs)
	}
}
