package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/ratelimit"
	"github.com/flowguard/flowguard/schemas"
)

// ProviderLimits is what the flow_ratelimits bucket says of a provider, with the
// weight used in the current window of each budget.
type ProviderLimits struct {
	Provider string                  `json:"provider"`
	Budgets  []ratelimit.Usage       `json:"budgets,omitempty"`
	Pause    *contract.ProviderPause `json:"pause,omitempty"`
}

// SetRateLimits stores a provider's budgets in flow_ratelimits; every worker
// applies them at once, in place of its --rate-limits file's for that provider.
func (c *Client) SetRateLimits(ctx context.Context, provider string, rl contract.RateLimits) error {
	if err := ratelimit.Check(provider, rl); err != nil {
		return err
	}
	data, err := json.Marshal(rl)
	if err != nil {
		return err
	}
	if err := schemas.ValidateJSON(schemas.RateLimits, data); err != nil {
		return fmt.Errorf("rate limits %w", err)
	}
	kv, err := c.rateLimits(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, contract.RateBudgetsKey(provider), data); err != nil {
		return fmt.Errorf("store the rate limits of %s: %w", provider, err)
	}
	return nil
}

// RemoveRateLimits deletes a provider's budgets from the bucket (the workers'
// files apply again) or, with pause, lifts its pause.
func (c *Client) RemoveRateLimits(ctx context.Context, provider string, pause bool) error {
	if err := contract.CheckID("provider", provider); err != nil {
		return err
	}
	kv, err := c.rateLimits(ctx)
	if err != nil {
		return err
	}
	key := contract.RateBudgetsKey(provider)
	if pause {
		key = contract.RatePauseKey(provider)
	}
	if err := kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// RateLimits returns the providers' budgets and pauses in the bucket, sorted by
// provider, with the weight used in each budget's current window.
func (c *Client) RateLimits(ctx context.Context) ([]ProviderLimits, error) {
	kv, err := c.rateLimits(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", contract.BucketRateLimits, err)
	}
	byProvider := map[string]*ProviderLimits{}
	now := time.Now()
	for key := range keys.Keys() {
		what, provider, ok := contract.ParseRateLimitKey(key)
		if !ok {
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		pl := byProvider[provider]
		if pl == nil {
			pl = &ProviderLimits{Provider: provider}
			byProvider[provider] = pl
		}
		if what == "pause" {
			pl.Pause = &contract.ProviderPause{}
			if err := json.Unmarshal(e.Value(), pl.Pause); err != nil {
				return nil, fmt.Errorf("decode %s: %w", key, err)
			}
			continue
		}
		var rl contract.RateLimits
		if err := json.Unmarshal(e.Value(), &rl); err != nil {
			return nil, fmt.Errorf("decode %s: %w", key, err)
		}
		for _, b := range rl.Budgets {
			u := ratelimit.Usage{Budget: b}
			if u.Used, u.WindowEnd, err = c.used(ctx, provider, b, now); err != nil {
				return nil, err
			}
			pl.Budgets = append(pl.Budgets, u)
		}
	}
	out := make([]ProviderLimits, 0, len(byProvider))
	for _, pl := range byProvider {
		out = append(out, *pl)
	}
	slices.SortFunc(out, func(a, b ProviderLimits) int { return strings.Compare(a.Provider, b.Provider) })
	return out, nil
}

// used reads the counter of a budget's current window.
func (c *Client) used(ctx context.Context, provider string, b contract.Budget, now time.Time) (int64, time.Time, error) {
	subject, end, err := ratelimit.CounterSubject(c.subjects, provider, b, now)
	if err != nil {
		return 0, time.Time{}, err
	}
	s, err := c.js.Stream(ctx, contract.StreamRateLimits)
	if err != nil {
		return 0, end, fmt.Errorf("open stream %s: %w", contract.StreamRateLimits, notProvisioned(err))
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, end, nil
	}
	if err != nil {
		return 0, end, fmt.Errorf("read %s: %w", subject, err)
	}
	var v struct {
		Value string `json:"val"`
	}
	if err := json.Unmarshal(m.Data, &v); err != nil {
		return 0, end, fmt.Errorf("read %s: %w", subject, err)
	}
	n, err := strconv.ParseInt(v.Value, 10, 64)
	return n, end, err
}

func (c *Client) rateLimits(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, contract.BucketRateLimits)
	if err != nil {
		return nil, notProvisioned(err)
	}
	return kv, nil
}

// addPauses adds the providers' fleet-wide pauses (pause.<provider> in
// flow_ratelimits) to byProvider; all, or provider's when it is not empty.
func (c *Client) addPauses(ctx context.Context, provider string, byProvider map[string]*BreakerStatus) error {
	kv, err := c.js.KeyValue(ctx, contract.BucketRateLimits)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil // workers older than rate limits
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", contract.BucketRateLimits, err)
	}
	filter := contract.RatePauseKey("*")
	if provider != "" {
		filter = contract.RatePauseKey(provider)
	}
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s: %w", contract.BucketRateLimits, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e = <-w.Updates():
		}
		if e == nil {
			return nil // every current value delivered
		}
		_, p, ok := contract.ParseRateLimitKey(e.Key())
		if !ok {
			continue
		}
		var pause contract.ProviderPause
		if err := json.Unmarshal(e.Value(), &pause); err != nil {
			return fmt.Errorf("decode %s in %s: %w", e.Key(), contract.BucketRateLimits, err)
		}
		st := byProvider[p]
		if st == nil {
			st = &BreakerStatus{Provider: p}
			byProvider[p] = st
		}
		st.Pause = &pause
	}
}
