package resilience

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkChain measures what the chain adds to one successful attempt: a call
// bare, under a timeout only (what nodes that call no provider pay), and through
// retry, breaker and timeout (provider nodes), alone and from parallel goroutines
// sharing the breaker; first with a call that does nothing, which shows the
// chain's own cost, then with an HTTP call to a local server, which shows it
// against the cheapest real provider call.
func BenchmarkChain(b *testing.B) {
	ctx := context.Background()
	chain, err := New(Options{Settings: testSettings()})
	if err != nil {
		b.Fatal(err)
	}
	call := Call{Provider: "exchange", Timeout: 30 * time.Second, Retry: RetrySettings{MaxAttempts: 3, MinWait: time.Second, MaxWait: time.Minute, Multiplier: 2, Jitter: 0.5}}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"price": 1}`) }))
	defer srv.Close()
	get := func(ctx context.Context, _ int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		if err != nil {
			return err
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return err
	}

	for _, op := range []struct {
		name string
		fn   func(context.Context, int) error
	}{
		{"noop", func(context.Context, int) error { return nil }},
		{"http", get},
	} {
		b.Run(op.name+"/bare", func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				if err := op.fn(ctx, i); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(op.name+"/timeout", func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				if err := WithTimeout(ctx, 30*time.Second, func(ctx context.Context) error { return op.fn(ctx, i) }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(op.name+"/chain", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := chain.Do(ctx, call, op.fn); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(op.name+"/chain-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := chain.Do(ctx, call, op.fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
