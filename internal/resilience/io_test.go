package resilience

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRetryIORetriesUntilSuccess(t *testing.T) {
	calls := 0
	err := RetryIO(context.Background(), nil, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("server restarting")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestRetryIOStopsOnPermanentErrors(t *testing.T) {
	refused := errors.New("message too large")
	calls := 0
	err := RetryIO(context.Background(), func(err error) bool { return errors.Is(err, refused) }, func(context.Context) error {
		calls++
		return refused
	})
	if !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestRetryIOStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := RetryIO(ctx, nil, func(ctx context.Context) error { return errors.New("unreachable") })
	if err == nil || ctx.Err() == nil {
		t.Fatalf("err %v, ctx %v", err, ctx.Err())
	}
}
