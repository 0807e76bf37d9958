package contract

import (
	"strconv"
	"strings"
	"time"
)

// BucketRateLimits holds providers' budgets that operators edit live
// (budgets.<provider>) and the fleet-wide pauses providers asked for
// (pause.<provider>).
const BucketRateLimits = "flow_ratelimits"

// StreamRateLimits holds the counters of the budgets' windows, one subject per
// provider, budget and window: <prefix>.ratelimit.<provider>.<budget>.<window_ms>.<index>.
const StreamRateLimits = "FLOW_RATELIMITS"

// KindRateLimited: a provider node found no budget (or its provider paused) within
// its deadline, or the provider answered HTTP 429 or 418.
const KindRateLimited = "rate_limited"

// NodeWaiting is the event of a provider node that waits for a budget's next
// window, or for the end of its provider's pause, before its attempt.
const NodeWaiting = "node_waiting"

// BreakerSourceRateLimit marks a BreakerState that reports a provider paused for
// the whole fleet because it answered 429 or 418 with a wait.
const BreakerSourceRateLimit = "rate_limit"

// RateLimit counter subjects.

// RateLimit is the counter subject of one window of a provider's budget.
func (s Subjects) RateLimit(provider, budget string, window time.Duration, index int64) string {
	return s.Prefix + ".ratelimit." + provider + "." + budget + "." + strconv.FormatInt(window.Milliseconds(), 10) + "." + strconv.FormatInt(index, 10)
}

// RateLimitAll matches every budget counter.
func (s Subjects) RateLimitAll() string { return s.Prefix + ".ratelimit.>" }

// RateLimits is a provider's budgets: the value of budgets.<provider> in
// flow_ratelimits, and of each provider of the worker's --rate-limits file.
type RateLimits struct {
	Budgets []Budget `json:"budgets"`
}

// Budget is a weight a provider accepts per window: the sum of the weights of the
// calls admitted in one window, over every worker, never exceeds Limit.
type Budget struct {
	// Name is what nodes name in their budgets field.
	Name  string `json:"name"`
	Limit int64  `json:"limit"`
	// Window is a Go duration, 1s to 24h; windows are aligned on the Unix epoch.
	Window string `json:"window"`
	// Margin, a Go duration, is the end of each window in which no call is
	// admitted, so that a call admitted just before the turn of the window reaches
	// the provider within it. Default: a twentieth of the window, at most 1s.
	Margin string `json:"margin,omitempty"`
}

// ProviderPause is the value of pause.<provider> in flow_ratelimits: the provider
// answered 429 or 418 asking to wait, so that no worker calls it until Until.
type ProviderPause struct {
	Provider string    `json:"provider"`
	Until    time.Time `json:"until"`
	Reason   string    `json:"reason"`
	WorkerID string    `json:"worker_id"`
	Time     time.Time `json:"time"`
}

const (
	rateBudgetsPrefix = "budgets."
	ratePausePrefix   = "pause."
)

// RateBudgetsKey is the key of a provider's budgets in flow_ratelimits.
func RateBudgetsKey(provider string) string { return rateBudgetsPrefix + provider }

// RatePauseKey is the key of a provider's fleet-wide pause in flow_ratelimits.
func RatePauseKey(provider string) string { return ratePausePrefix + provider }

// ParseRateLimitKey splits a flow_ratelimits key into what it holds, "budgets" or
// "pause", and the provider; ok is false for any other key.
func ParseRateLimitKey(key string) (what, provider string, ok bool) {
	for _, p := range []string{rateBudgetsPrefix, ratePausePrefix} {
		if name, found := strings.CutPrefix(key, p); found && CheckID("provider", name) == nil {
			return strings.TrimSuffix(p, "."), name, true
		}
	}
	return "", "", false
}
