package executor

import (
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/resilience"
)

// admission returns what a provider node draws from its provider's rate limits,
// with a listener that publishes node_waiting and logs; nil for other nodes. The
// listener runs in the node's goroutine, like retried's.
func (r *run) admission(pn *planNode) *resilience.Admission {
	if pn.provider == nil {
		return nil
	}
	provider := pn.provider.Provider()
	return &resilience.Admission{
		Provider: provider,
		Weight:   pn.def.WeightOrDefault(),
		Budgets:  pn.def.Budgets,
		NotAfter: r.x.NotAfter,
		OnWait: func(until time.Time, why string) {
			delayMS := max(time.Until(until).Milliseconds(), 0)
			r.log.Info().Str("node_id", pn.def.ID).Str("provider", provider).Time("until", until).Str("reason", why).Msg("node waiting for its rate limit")
			ev := contract.Event{Type: contract.NodeWaiting, NodeID: pn.def.ID, NodeType: pn.def.Type, DelayMS: &delayMS, Reason: why}
			if err := r.st.Emit(ev); err != nil {
				r.log.Warn().Err(err).Str("node_id", pn.def.ID).Msg("publish node_waiting")
			}
		},
	}
}
