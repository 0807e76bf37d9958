package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
)

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
