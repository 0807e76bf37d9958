package resilience

import (
	"context"
	"errors"
	"time"
)

// ErrRateLimited is matched by the error of a call that found no budget, or whose
// provider is paused, within its deadline: no call was made.
var ErrRateLimited = errors.New("rate limited")

// RateLimitedError is a call refused by a Limiter. It is ErrRateLimited.
type RateLimitedError struct {
	Provider string
	// Why says which budget or pause refused the call, and what to do.
	Why string
}

func (e *RateLimitedError) Error() string {
	return "provider " + e.Provider + " rate limited: " + e.Why
}

// Is makes a *RateLimitedError match ErrRateLimited.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }

// Limiter shares providers' rate limits. The chain asks it before each attempt,
// outside the breaker, so that waiting never counts as a failure; and tells it when
// a provider asked its callers to wait (an HTTP 429 or 418 with Retry-After).
type Limiter interface {
	// Admit returns once the call may go, nil; a *RateLimitedError when it cannot
	// before its deadline (now + timeout, ctx's deadline, a.NotAfter); ctx's error
	// when ctx ends.
	Admit(ctx context.Context, timeout time.Duration, a Admission) error
	// Backoff records that provider asked every caller to wait until until. It
	// must not block.
	Backoff(provider string, until time.Time, reason string)
}

// Admission is what a call draws from its provider's rate limits.
type Admission struct {
	Provider string
	// Weight of the call, at least 1.
	Weight int64
	// Budgets it draws from; none means every budget of the provider.
	Budgets []string
	// NotAfter, when set, is the request's not_after: no call starts later.
	NotAfter *time.Time
	// OnWait, when set, is called before each wait with its end and its reason.
	OnWait func(until time.Time, reason string)
}
