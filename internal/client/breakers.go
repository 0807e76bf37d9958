package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/schemas"
)

// BreakerStatus is what the flow_breakers bucket says about a provider.
type BreakerStatus struct {
	Provider string
	// Override is the operator's last order, nil when there is none.
	Override *contract.BreakerOverride
	// Shared is the last state a worker shared in cluster scope, nil when none.
	Shared *contract.BreakerState
	// Pause is the last pause the provider asked of the fleet (429, 418), nil
	// when none; it may have lapsed.
	Pause *contract.ProviderPause `json:",omitempty"`
}

// OrderBreaker stores an operator's order about a provider's breaker; every
// worker obeys it as soon as its watch delivers it. A close also clears the state
// workers shared in cluster scope, so that none keeps following an old opening.
func (c *Client) OrderBreaker(ctx context.Context, o *contract.BreakerOverride) error {
	if err := contract.CheckID("provider", o.Provider); err != nil {
		return fmt.Errorf("%w; the provider is the node's provider field, or its URL host or subject with other characters than A-Z a-z 0-9 _ - made _", err)
	}
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := schemas.ValidateJSON(schemas.BreakerOverride, data); err != nil {
		return fmt.Errorf("breaker order %w", err)
	}
	kv, err := c.breakers(ctx)
	if err != nil {
		return err
	}
	if o.Action == contract.BreakerActionClose {
		if err := kv.Delete(ctx, contract.BreakerStateKey(o.Provider)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("clear the shared state of %s: %w", o.Provider, err)
		}
	}
	if _, err := kv.Put(ctx, contract.BreakerOverrideKey(o.Provider), data); err != nil {
		return fmt.Errorf("store the order for %s: %w", o.Provider, err)
	}
	return nil
}

// Breakers returns what the bucket holds about every provider, or about one when
// provider is not empty, sorted by provider.
func (c *Client) Breakers(ctx context.Context, provider string) ([]BreakerStatus, error) {
	kv, err := c.breakers(ctx)
	if err != nil {
		return nil, err
	}
	filter := ">"
	if provider != "" {
		filter = "*." + provider
	}
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", contract.BucketBreakers, err)
	}
	defer func() { _ = w.Stop() }()
	byProvider := map[string]*BreakerStatus{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e = <-w.Updates():
		}
		if e == nil {
			break // every current value delivered
		}
		what, p, ok := contract.ParseBreakerKey(e.Key())
		if !ok {
			continue
		}
		st := byProvider[p]
		if st == nil {
			st = &BreakerStatus{Provider: p}
			byProvider[p] = st
		}
		var target any = &st.Override
		if what == "state" {
			target = &st.Shared
		}
		if err := json.Unmarshal(e.Value(), target); err != nil {
			return nil, fmt.Errorf("decode %s in %s: %w", e.Key(), contract.BucketBreakers, err)
		}
	}
	if err := c.addPauses(ctx, provider, byProvider); err != nil {
		return nil, err
	}
	out := make([]BreakerStatus, 0, len(byProvider))
	for _, st := range byProvider {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b BreakerStatus) int { return cmp.Compare(a.Provider, b.Provider) })
	return out, nil
}

func (c *Client) breakers(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, contract.BucketBreakers)
	if err != nil {
		return nil, notProvisioned(err)
	}
	return kv, nil
}
