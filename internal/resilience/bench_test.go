package resilience

import (
	"context"
	"testing"
	"time"
)

// BenchmarkChain measures what the chain adds to one successful attempt: the bare
// call against the same call through retry, breaker and timeout. The difference
// is the chain's cost per attempt.
func BenchmarkChain(b *testing.B) {
	ctx := context.Background()
	op := func(context.Context, int) error { return nil }
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			if err := op(ctx, i); err != nil {
				b.Fatal(err)
			}
		}
	})
	chain, err := New(Options{Settings: testSettings()})
	if err != nil {
		b.Fatal(err)
	}
	call := Call{Provider: "exchange", Timeout: 30 * time.Second, Retry: RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: time.Minute, Multiplier: 2, Jitter: 0.5}}
	b.Run("chain", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := chain.Do(ctx, call, op); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("chain-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := chain.Do(ctx, call, op); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
