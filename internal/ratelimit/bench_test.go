package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/resilience"
)

// BenchmarkAdmit measures what a rate-limited call adds before the call itself,
// against an unlimited one, at 1 and 64 calls in flight on one worker: the
// JetStream counter this package uses (one budget, two budgets), and, for the
// record, a KV compare-and-set budget (read, then update at the read revision,
// again on conflict). round_trips/op counts the requests to the server.
func BenchmarkAdmit(b *testing.B) {
	budgets := map[string]contract.RateLimits{
		"one": {Budgets: []contract.Budget{{Name: "w", Limit: 1 << 50, Window: "24h"}}},
		"two": {Budgets: []contract.Budget{{Name: "w", Limit: 1 << 50, Window: "24h"}, {Name: "orders", Limit: 1 << 50, Window: "1h"}}},
	}
	limiters, buckets, _ := fleet(b, 1, budgets)
	l := limiters[0]
	ctx := context.Background()
	cas := &casBudget{kv: buckets.RateLimits, limit: 1 << 50}
	for _, inFlight := range []int{1, 64} {
		for _, c := range []struct {
			name  string
			trips int64
			admit func() error
		}{
			{"unlimited", 0, func() error { return l.Admit(ctx, 0, resilience.Admission{Provider: "free", Weight: 1}) }},
			{"counter", 1, func() error { return l.Admit(ctx, 0, resilience.Admission{Provider: "one", Weight: 1}) }},
			{"counter-2-budgets", 2, func() error { return l.Admit(ctx, 0, resilience.Admission{Provider: "two", Weight: 1}) }},
			{"kv-cas", -1, func() error { return cas.admit(ctx, 1) }},
		} {
			b.Run(c.name+"/in-flight="+strconv.Itoa(inFlight), func(b *testing.B) {
				cas.trips.Store(0)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range inFlight {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							if err := c.admit(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				trips := float64(c.trips)
				if c.trips < 0 {
					trips = float64(cas.trips.Load()) / float64(b.N)
				}
				b.ReportMetric(trips, "round_trips/op")
			})
		}
	}
}

// casBudget is a budget kept in one KV key, admitted by compare-and-set.
type casBudget struct {
	kv    jetstream.KeyValue
	limit int64
	trips atomic.Int64
}

func (c *casBudget) admit(ctx context.Context, weight int64) error {
	const key = "bench.cas"
	for {
		c.trips.Add(1)
		e, err := c.kv.Get(ctx, key)
		var used int64
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(e.Value(), &used); err != nil {
				return err
			}
			rev = e.Revision()
		}
		if used+weight > c.limit {
			return errors.New("budget used up")
		}
		data, _ := json.Marshal(used + weight)
		c.trips.Add(1)
		if rev == 0 {
			_, err = c.kv.Create(ctx, key, data)
		} else {
			_, err = c.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return err
		}
	}
}
