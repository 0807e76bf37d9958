package resilience

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sony/gobreaker/v2"
)

// Options of a Chain. Settings is required; the rest have defaults.
type Options struct {
	// Settings are the worker's defaults; Call overrides timeout and retry per call.
	Settings Settings
	// Transient reports failures worth retrying (connection errors, HTTP 5xx and
	// 429, NATS no responders); attempt timeouts always are. Only these count as
	// failures in the breakers. Default: none besides timeouts.
	Transient func(error) bool
	// RetryAfter returns the wait a failure asks for, such as an HTTP 429's
	// Retry-After; 0 when none. Default: none.
	RetryAfter func(error) time.Duration
	// Unrepeatable reports failures after which the call may have taken effect,
	// such as an HTTP POST that timed out or met a 5xx: they count in the breaker
	// like other transient failures, but are not retried, since a second call
	// could place a second order. Default: none.
	Unrepeatable func(error) bool
	// OnStateChange is the listener of breaker state changes. It runs under the
	// breaker's lock: it must not block nor call back into the chain.
	OnStateChange func(StateChange)
	// NewTimer makes the timer of the waits between attempts; default real timers.
	NewTimer func() Timer
	// Limiter, when set, admits each attempt of a call with an Admission, and
	// hears of providers asking to wait. Default: no rate limits.
	Limiter Limiter
}

// Chain runs the calls of provider nodes. It is safe for concurrent use; its
// breakers are shared by every call. Each call goes through, outer to inner:
//
//	retry        one backoff per call; only transient failures are retried, and
//	             not unrepeatable ones; stops at MaxAttempts, or rather than wait
//	             past ctx's deadline (the workflow timeout); each retry is
//	             reported to Call.OnRetry
//	breaker      the provider's circuit breaker and holds: when open, the attempt
//	             fails with a *CircuitOpenError, no call is made, no retry follows
//	rate limit   Limiter.Admit waits for the call's budgets (outside the breaker:
//	             waiting is never a failure); a refusal is a *RateLimitedError, no
//	             retry follows; a failure asking for a wait (RetryAfter) is told
//	             to Limiter.Backoff
//	timeout      each attempt under Call.Timeout; expiry is a *TimeoutError
//	call         the node's work
//
// so every attempt counts once in its breaker, and a timed-out attempt counts as a
// failure. The chain never logs: listeners do.
type Chain struct {
	settings     Settings
	breakers     *Breakers
	transient    func(error) bool
	retryAfter   func(error) time.Duration
	unrepeatable func(error) bool
	newTimer     func() Timer
	limiter      Limiter
}

// New returns a chain; it fails when the settings are invalid.
func New(o Options) (*Chain, error) {
	if err := o.Settings.Validate(); err != nil {
		return nil, err
	}
	c := &Chain{settings: o.Settings, transient: o.Transient, retryAfter: o.RetryAfter, unrepeatable: o.Unrepeatable, newTimer: o.NewTimer, limiter: o.Limiter}
	if c.transient == nil {
		c.transient = func(error) bool { return false }
	}
	if c.unrepeatable == nil {
		c.unrepeatable = func(error) bool { return false }
	}
	if c.retryAfter == nil {
		c.retryAfter = func(error) time.Duration { return 0 }
	}
	c.breakers = newBreakers(o.Settings.Breaker, c.retryable, o.OnStateChange)
	return c, nil
}

// Settings returns the worker's default settings.
func (c *Chain) Settings() Settings { return c.settings }

// Breakers returns the breakers, for operators' orders and cluster holds.
func (c *Chain) Breakers() *Breakers { return c.breakers }

func (c *Chain) retryable(err error) bool {
	return errors.Is(err, ErrAttemptTimeout) || c.transient(err)
}

// Call is one provider call.
type Call struct {
	Provider string
	Timeout  time.Duration
	Retry    RetrySettings
	// OnRetry, when set, is called before each wait with the number of the attempt
	// to come (2 for the first retry), the wait and the failure that caused it.
	OnRetry func(attempt int, delay time.Duration, err error)
	// Admission, when set with a Limiter, is what each attempt draws from the
	// provider's rate limits.
	Admission *Admission
}

// Do runs op through the chain and returns the number of attempts made and the
// error of the last one: nil on success; a *CircuitOpenError when refused; a
// *GaveUpError wrapping the last failure when retries ran out; ctx's error when ctx
// ended during a wait; else the failure that is not worth retrying.
func (c *Chain) Do(ctx context.Context, call Call, op func(ctx context.Context, attempt int) error) (int, error) {
	b := c.breakers.get(call.Provider)
	sched := newSchedule(ctx, call.Retry, c.breakers.now)
	attempts := 0
	attempt := func() error {
		attempts++
		if err := b.refusal(c.breakers.now()); err != nil {
			return backoff.Permanent(err)
		}
		cb := b.cb.Load()
		if c.limiter != nil && call.Admission != nil && cb.State() != gobreaker.StateOpen {
			if err := c.limiter.Admit(ctx, call.Timeout, *call.Admission); err != nil {
				return backoff.Permanent(err)
			}
		}
		_, err := cb.Execute(func() (struct{}, error) {
			err := WithTimeout(ctx, call.Timeout, func(ctx context.Context) error { return op(ctx, attempts) })
			if err == nil {
				return struct{}{}, nil
			}
			if ctx.Err() != nil || !c.retryable(err) {
				return struct{}{}, &notFailure{err}
			}
			msg := err.Error()
			b.lastErr.Store(&msg)
			return struct{}{}, err
		})
		if err == nil {
			return nil
		}
		c.backoff(call.Provider, err)
		if nf, ok := err.(*notFailure); ok {
			return backoff.Permanent(nf.err)
		}
		switch {
		case errors.Is(err, gobreaker.ErrOpenState):
			return backoff.Permanent(b.openError(false))
		case errors.Is(err, gobreaker.ErrTooManyRequests):
			return backoff.Permanent(b.openError(true))
		case c.unrepeatable(err):
			return backoff.Permanent(err) // counted in the breaker, not repeated
		}
		sched.retryAfter = c.retryAfter(err)
		return err
	}
	var notify backoff.Notify
	if call.OnRetry != nil {
		notify = func(err error, d time.Duration) { call.OnRetry(attempts+1, d, err) }
	}
	var timer backoff.Timer
	if c.newTimer != nil {
		timer = c.newTimer()
	}
	err := backoff.RetryNotifyWithTimer(attempt, backoff.WithContext(sched, ctx), notify, timer)
	if err != nil && ctx.Err() == nil && (sched.hitDeadline || attempts > 1) && c.retryable(err) {
		err = &GaveUpError{Attempts: attempts, Deadline: sched.hitDeadline, Err: err}
	}
	return attempts, err
}

// backoff tells the limiter of a failure that asks every caller to wait.
func (c *Chain) backoff(provider string, err error) {
	if c.limiter == nil {
		return
	}
	if nf, ok := err.(*notFailure); ok {
		err = nf.err
	}
	if wait := c.retryAfter(err); wait > 0 {
		c.limiter.Backoff(provider, c.breakers.now().Add(wait), err.Error())
	}
}
