package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
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

// runSchedules handles schedules' firings as execution requests, through the
// durable consumer the workers share on FLOW_SCHEDULES, until ctx ends; the
// returned channel closes once its handlers have returned.
func (w *Worker) runSchedules(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	cfg := w.cfg.Consumer
	cfg.Stream, cfg.Durable, cfg.FilterSubject = contract.StreamSchedules, contract.DurableSchedules, w.subjects.FiredAll()
	firings, err := consumer.New(w.js, cfg, w.handleFiring, w.log, consumer.WithGate(w.canStart))
	if err != nil {
		w.log.Error().Err(err).Msg("schedules' firings are not run by this worker")
		close(done)
		return done
	}
	go func() {
		defer close(done)
		firings.Run(ctx)
	}()
	return done
}

// handleFiring handles a schedule's firing as the request it stands for; a firing
// too late to run is acknowledged and logged, not run.
func (w *Worker) handleFiring(ctx context.Context, msg jetstream.Msg) consumer.Outcome {
	req, late, err := schedule.AsRequest(msg, w.subjects, time.Now())
	switch {
	case err != nil:
		w.log.Error().Err(err).Msg("firing dropped")
		return consumer.Outcome{Decision: consumer.Term, Reason: err.Error()}
	case late != "":
		w.log.Warn().Str("subject", msg.Subject()).Str("reason", late).Msg("missed firing not replayed")
		return consumer.Outcome{Decision: consumer.Ack}
	}
	return w.handle(ctx, req)
}
