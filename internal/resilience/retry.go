package resilience

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Timer schedules the waits between attempts; it has the method set of
// backoff.Timer. Tests inject one that fires at once and records the delays.
type Timer interface {
	Start(d time.Duration)
	Stop()
	C() <-chan time.Time
}

// schedule is the backoff of one attempt sequence: exponential with jitter
// (cenkalti/backoff), bounded in attempts, each delay kept within [MinWait,
// MaxWait] and raised to a provider's Retry-After. It stops instead of waiting past
// the caller's deadline. Not safe for concurrent use: one per sequence.
type schedule struct {
	tries backoff.BackOff
	min   time.Duration
	max   time.Duration
	now   func() time.Time

	deadline    time.Time // zero: none
	retryAfter  time.Duration
	hitDeadline bool
}

func newSchedule(ctx context.Context, r RetrySettings, now func() time.Time) *schedule {
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.MinWait),
		backoff.WithMaxInterval(r.MaxWait),
		backoff.WithMultiplier(r.Multiplier),
		backoff.WithRandomizationFactor(r.Jitter),
		backoff.WithMaxElapsedTime(0), // the caller's context bounds the sequence
	)
	s := &schedule{tries: backoff.WithMaxRetries(exp, uint64(max(r.MaxAttempts-1, 0))), min: r.MinWait, max: r.MaxWait, now: now}
	s.deadline, _ = ctx.Deadline()
	return s
}

// NextBackOff implements backoff.BackOff.
func (s *schedule) NextBackOff() time.Duration {
	d := s.tries.NextBackOff()
	if d == backoff.Stop {
		return backoff.Stop
	}
	d = min(max(d, s.min), s.max)
	if s.retryAfter > d {
		d = s.retryAfter
	}
	s.retryAfter = 0
	if !s.deadline.IsZero() && s.now().Add(d).After(s.deadline) {
		s.hitDeadline = true
		return backoff.Stop
	}
	return d
}

// Reset implements backoff.BackOff.
func (s *schedule) Reset() {
	s.tries.Reset()
	s.retryAfter = 0
	s.hitDeadline = false
}
