package worker

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/ratelimit"
)

// setupRateLimits builds the fleet's rate limiter over the flow_ratelimits bucket
// and loads the bucket's budgets and pauses; the returned watch lives until bgCtx
// ends, and Run follows it.
func (w *Worker) setupRateLimits(bgCtx context.Context, nc *nats.Conn, kv jetstream.KeyValue) (*ratelimit.Watch, error) {
	l, err := ratelimit.New(nc, kv, ratelimit.Config{
		WorkerID: w.cfg.WorkerID, Subjects: w.subjects, Budgets: w.cfg.RateLimits, Observer: w.metrics,
	}, w.log)
	if err != nil {
		return nil, err
	}
	watch, err := l.Watch(bgCtx)
	if err != nil {
		return nil, err
	}
	w.limiter = l
	return watch, nil
}
