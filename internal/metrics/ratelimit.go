package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rateLimits are the metrics of providers' rate limits.
type rateLimits struct {
	used, left      *prometheus.GaugeVec
	waits, refusals *prometheus.CounterVec
}

func newRateLimits() rateLimits {
	labels := []string{"provider", "budget", "window"}
	return rateLimits{
		used: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowguard_ratelimit_used", Help: "Weight used in the current window of a provider's budget, over every worker, as of this worker's last admitted call.",
		}, labels),
		left: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowguard_ratelimit_left", Help: "Weight left in the current window of a provider's budget, as of this worker's last admitted call.",
		}, labels),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowguard_ratelimit_waits_total", Help: "Waits of provider calls for a budget's next window or the end of a provider's pause, by provider.",
		}, []string{"provider"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowguard_ratelimit_refusals_total", Help: "Provider calls refused by their rate limits (kind rate_limited, no call made), by provider.",
		}, []string{"provider"}),
	}
}

func (r rateLimits) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.used, r.left, r.waits, r.refusals}
}

// BudgetUsed implements ratelimit.Observer.
func (m *Metrics) BudgetUsed(provider, budget string, window time.Duration, used, limit int64) {
	w := window.String()
	m.rate.used.WithLabelValues(provider, budget, w).Set(float64(used))
	m.rate.left.WithLabelValues(provider, budget, w).Set(float64(max(limit-used, 0)))
}

// Waited implements ratelimit.Observer.
func (m *Metrics) Waited(provider string) { m.rate.waits.WithLabelValues(provider).Inc() }

// Refused implements ratelimit.Observer.
func (m *Metrics) Refused(provider string) { m.rate.refusals.WithLabelValues(provider).Inc() }
