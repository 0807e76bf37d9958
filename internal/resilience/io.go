// Package resilience wraps calls that can fail for a while: provider calls made by
// nodes (timeout, retry with backoff, circuit breaker) and the worker's own I/O to
// NATS (bounded retries while a connection or a server comes back).
package resilience

import (
	"context"
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
