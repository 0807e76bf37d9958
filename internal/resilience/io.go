// Package resilience wraps calls that can fail for a while: provider calls made by
// nodes (timeout, retry with backoff, circuit breaker) and the worker's own I/O to
// NATS (bounded retries while a connection or a server comes back).
package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Bounds of RetryIO. A lost connection or a restarting server makes operations fail
// for a while; the caller's context bounds the whole.
const (
	ioAttemptTimeout = 5 * time.Second
	ioMinWait        = 50 * time.Millisecond
	ioMaxWait        = 2 * time.Second
	ioMaxElapsed     = 2 * time.Minute
)

// RetryIO runs op until it succeeds, returns an error for which permanent is true,
// or ctx ends. Each try gets its own timeout. Use it for idempotent operations only
// (a KV compare-and-set, a publish deduplicated by its message id).
func RetryIO(ctx context.Context, permanent func(error) bool, op func(ctx context.Context) error) error {
	// Most operations succeed at once: try before building any backoff.
	err := attempt(ctx, op)
	if err == nil || ctx.Err() != nil || (permanent != nil && permanent(err)) {
		return err
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(ioMinWait),
		backoff.WithMaxInterval(ioMaxWait),
		backoff.WithMaxElapsedTime(ioMaxElapsed),
	)
	return backoff.Retry(func() error {
		err := attempt(ctx, op)
		if err != nil && permanent != nil && permanent(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
}

// attempt runs op once under its own timeout.
func attempt(ctx context.Context, op func(ctx context.Context) error) error {
	tctx, cancel := context.WithTimeout(ctx, ioAttemptTimeout)
	defer cancel()
	return op(tctx)
}

// Bounds of WaitIO.
const (
	waitMinWait = 100 * time.Millisecond
	waitMaxWait = 2 * time.Second
)

// WaitIO runs op until it succeeds, fails with an error for which waitable is
// false, or ctx ends; unlike RetryIO it has no bound of its own, so ctx bounds it.
// It suits waiting at start for a service that is not up yet. onWait, when set, is
// called after each failed try with the error and the time waited so far (the
// caller decides how often to log). When ctx ends first, the error wraps both ctx's
// and the last one.
func WaitIO(ctx context.Context, waitable func(error) bool, onWait func(err error, waited time.Duration), op func(ctx context.Context) error) error {
	start := time.Now()
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(waitMinWait),
		backoff.WithMaxInterval(waitMaxWait),
		backoff.WithMaxElapsedTime(0),
	)
	var last error
	err := backoff.Retry(func() error {
		err := attempt(ctx, op)
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil || !waitable(err) {
			return backoff.Permanent(err)
		}
		if onWait != nil {
			onWait(err, time.Since(start))
		}
		return err
	}, backoff.WithContext(b, ctx))
	if err != nil && ctx.Err() != nil && last != nil && !errors.Is(last, ctx.Err()) {
		return fmt.Errorf("%w: %w", ctx.Err(), last)
	}
	return err
}
