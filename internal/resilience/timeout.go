package resilience

import (
	"context"
	"errors"
	"time"
)

// errTimeoutCause is the cancellation cause of an attempt's context when its timeout ends it.
var errTimeoutCause = errors.New("attempt timeout")

// WithTimeout runs op under a context that ends after timeout. When the timeout,
// and not ctx, stopped op, the error is a *TimeoutError wrapping op's.
func WithTimeout(ctx context.Context, timeout time.Duration, op func(ctx context.Context) error) error {
	actx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeoutCause)
	defer cancel()
	err := op(actx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), errTimeoutCause) {
		return &TimeoutError{Timeout: timeout, Err: err}
	}
	return err
}
