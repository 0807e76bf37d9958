package worker

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/ratelimit"
	"github.com/flowguard/flowguard/internal/schedule"
)

// The fleet's shared parts: rate limits and schedules.

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

// forwardSchedules forwards schedules' firings to FLOW_EXEC until ctx ends; the
// returned channel closes when it has stopped.
func (w *Worker) forwardSchedules(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := schedule.NewForwarder(w.js, w.subjects, w.log).Run(ctx); err != nil {
			w.log.Error().Err(err).Msg("schedules' firings are not forwarded by this worker")
		}
	}()
	return done
}
