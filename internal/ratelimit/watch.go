package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/kvstate"
)

// Watch is a watch of the flow_ratelimits bucket, made by Limiter.Watch.
type Watch struct{ kw jetstream.KeyWatcher }

// Watch starts watching the bucket and applies its budgets and pauses before it
// returns, so that a worker never calls a provider outside the budgets operators
// set. The watch lives until ctx ends.
func (l *Limiter) Watch(ctx context.Context) (*Watch, error) {
	kw, err := kvstate.WatchLoaded(ctx, l.kv, loadTimeout, l.apply)
	if err != nil {
		return nil, err
	}
	return &Watch{kw: kw}, nil
}

// Run applies the bucket's updates and shares this worker's pauses until ctx ends.
func (l *Limiter) Run(ctx context.Context, w *Watch) {
	defer func() { _ = w.kw.Stop() }()
	updates := w.kw.Updates()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
			l.mu.Lock()
			queue := l.queue
			l.queue = nil
			l.mu.Unlock()
			for _, p := range queue {
				l.share(ctx, p)
			}
		case e, ok := <-updates:
			if !ok {
				l.log.Error().Str("bucket", contract.BucketRateLimits).Msg("rate limit watch closed: budgets edited and pauses made elsewhere are no longer followed")
				updates = nil
				continue
			}
			if e != nil {
				l.apply(e)
			}
		}
	}
}

// apply applies one entry of the bucket.
func (l *Limiter) apply(e jetstream.KeyValueEntry) {
	what, provider, ok := contract.ParseRateLimitKey(e.Key())
	if !ok {
		return
	}
	log := l.log.With().Str("provider", provider).Str("key", e.Key()).Logger()
	deleted := e.Operation() != jetstream.KeyValuePut
	switch {
	case what == "budgets" && deleted:
		l.mu.Lock()
		delete(l.live, provider)
		l.mu.Unlock()
		log.Info().Msg("rate limits deleted from the bucket: the worker's --rate-limits file applies again")
	case what == "budgets":
		var rl contract.RateLimits
		bs, err := decodeBudgets(provider, e.Value(), &rl)
		if err != nil {
			log.Error().Err(err).Msg("ignoring invalid rate limits; the previous ones still apply")
			return
		}
		l.mu.Lock()
		l.live[provider] = bs
		l.mu.Unlock()
		log.Info().RawJSON("budgets", e.Value()).Msg("rate limits applied")
	case deleted:
		l.mu.Lock()
		delete(l.pauses, provider)
		l.mu.Unlock()
	default:
		var p contract.ProviderPause
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			log.Warn().Err(err).Msg("ignoring an invalid provider pause")
			return
		}
		p.Provider = provider
		if l.pause(p) && l.now().Before(p.Until) {
			log.Warn().Time("until", p.Until).Str("by_worker", p.WorkerID).Str("reason", p.Reason).Msg("provider paused for the fleet: calls wait until then")
		}
	}
}

func decodeBudgets(provider string, data []byte, rl *contract.RateLimits) ([]budget, error) {
	if err := json.Unmarshal(data, rl); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidBudgets, err)
	}
	return compile(provider, *rl)
}

// share writes a pause to the bucket, unless a longer one is there, and announces
// it on flow.breakers.<provider>.
func (l *Limiter) share(ctx context.Context, p contract.ProviderPause) {
	log := l.log.With().Str("provider", p.Provider).Time("until", p.Until).Str("reason", p.Reason).Logger()
	log.Warn().Msg("provider asked to wait: pausing it for every worker")
	data, err := json.Marshal(p)
	if err != nil {
		log.Error().Err(err).Msg("encode provider pause")
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	key := contract.RatePauseKey(p.Provider)
	for range 3 { // compare-and-set: a longer pause written meanwhile wins
		e, err := l.kv.Get(wctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = l.kv.Create(wctx, key, data)
		case err != nil:
		default:
			var cur contract.ProviderPause
			if json.Unmarshal(e.Value(), &cur) == nil && !p.Until.After(cur.Until) {
				err = nil // a longer pause holds
				break
			}
			_, err = l.kv.Update(wctx, key, data, e.Revision())
		}
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			log.Warn().Err(err).Msg("share provider pause with the fleet")
			break
		}
	}
	until := p.Until
	st := contract.BreakerState{Provider: p.Provider, State: contract.BreakerOpen, WorkerID: l.cfg.WorkerID,
		Scope: contract.BreakerScopeCluster, Source: contract.BreakerSourceRateLimit, Time: p.Time, OpenUntil: &until, Reason: p.Reason}
	if msg, err := json.Marshal(st); err == nil {
		if err := l.conn.Publish(l.cfg.Subjects.Breakers(p.Provider), msg); err != nil {
			log.Warn().Err(err).Msg("publish provider pause")
		}
	}
}

// isWrongSequence reports a compare-and-set lost to another writer.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
