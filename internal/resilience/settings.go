package resilience

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrInvalidSettings is matched by every error of Settings.Validate and Profile.
var ErrInvalidSettings = errors.New("invalid resilience settings")

// Settings tune the calls of provider nodes. The timeout and the retry values can be
// overridden per node; the breaker values are per provider, for the whole worker.
type Settings struct {
	// Timeout bounds each attempt.
	Timeout time.Duration
	Retry   RetrySettings
	Breaker BreakerSettings
}

// RetrySettings shape the retries of transient failures: exponential backoff with
// jitter, each delay kept within [MinWait, MaxWait].
type RetrySettings struct {
	// MaxAttempts counts every attempt, the first included: 1 never retries.
	MaxAttempts int
	// MinWait is the first delay, and the shortest.
	MinWait time.Duration
	// MaxWait caps every delay, except a longer Retry-After asked by the provider.
	MaxWait time.Duration
	// Multiplier grows the delay after each retry.
	Multiplier float64
	// Jitter randomizes each delay by ±Jitter of its value (0 to 1); 0 makes the
	// schedule exact.
	Jitter float64
}

// BreakerSettings shape the circuit breaker of every provider.
type BreakerSettings struct {
	// Threshold is the number of consecutive failed attempts that opens the breaker.
	Threshold uint32
	// OpenTime is how long an open breaker fails calls at once before it lets one
	// probe through (half-open).
	OpenTime time.Duration
}

// Profile names.
const (
	Development = "development"
	Staging     = "staging"
	Production  = "production"
)

// Defaults shared by every profile.
const (
	DefaultTimeout    = 30 * time.Second
	DefaultMultiplier = 2
	DefaultJitter     = 0.5
)

// Profiles lists the profile names, in order of strictness.
func Profiles() []string { return []string{Development, Staging, Production} }

// Profile returns the settings of a named profile (see docs/contract.md, Resilience profiles).
func Profile(name string) (Settings, error) {
	s := Settings{
		Timeout: DefaultTimeout,
		Retry:   RetrySettings{MinWait: time.Second, Multiplier: DefaultMultiplier, Jitter: DefaultJitter},
	}
	switch name {
	case Development:
		s.Retry.MaxAttempts, s.Retry.MaxWait = 2, 60*time.Second
		s.Breaker = BreakerSettings{Threshold: 5, OpenTime: 60 * time.Second}
	case Staging:
		s.Retry.MaxAttempts, s.Retry.MaxWait = 3, 60*time.Second
		s.Breaker = BreakerSettings{Threshold: 5, OpenTime: 60 * time.Second}
	case Production:
		s.Retry.MaxAttempts, s.Retry.MaxWait = 3, 120*time.Second
		s.Breaker = BreakerSettings{Threshold: 10, OpenTime: 120 * time.Second}
	default:
		return Settings{}, fmt.Errorf("%w: unknown profile %q; use one of %s", ErrInvalidSettings, name, strings.Join(Profiles(), ", "))
	}
	return s, nil
}

// Override returns s with every non-zero field of o in place of its own, Jitter
// excepted: 0 is a meaningful jitter, so callers set it themselves.
func (s Settings) Override(o Settings) Settings {
	if o.Timeout != 0 {
		s.Timeout = o.Timeout
	}
	s.Retry = s.Retry.Override(o.Retry)
	if o.Breaker.Threshold != 0 {
		s.Breaker.Threshold = o.Breaker.Threshold
	}
	if o.Breaker.OpenTime != 0 {
		s.Breaker.OpenTime = o.Breaker.OpenTime
	}
	return s
}

// Override returns r with the non-zero attempts, waits and multiplier of o. When o
// sets a MinWait above r's MaxWait and no MaxWait of its own, MaxWait is raised to
// it, so that asking for a longer first wait gets it; waits that o sets both are
// kept as they are (reversed ones fail Validate).
func (r RetrySettings) Override(o RetrySettings) RetrySettings {
	if o.MaxAttempts != 0 {
		r.MaxAttempts = o.MaxAttempts
	}
	if o.MinWait != 0 {
		r.MinWait = o.MinWait
	}
	if o.MaxWait != 0 {
		r.MaxWait = o.MaxWait
	}
	if o.Multiplier != 0 {
		r.Multiplier = o.Multiplier
	}
	if o.MaxWait == 0 {
		r.MaxWait = max(r.MaxWait, r.MinWait)
	}
	return r
}

// Validate checks every value; its errors name the setting and its flag.
func (s Settings) Validate() error {
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(s.Timeout > 0, "node timeout (--node-timeout) must be positive, got %s", s.Timeout)
	check(s.Retry.MaxAttempts >= 1 && s.Retry.MaxAttempts <= 100, "retry attempts (--retry-attempts) must be 1 to 100, got %d", s.Retry.MaxAttempts)
	check(s.Retry.MinWait > 0, "retry min wait (--retry-min-wait) must be positive, got %s", s.Retry.MinWait)
	check(s.Retry.MaxWait >= s.Retry.MinWait, "retry max wait (--retry-max-wait, %s) must be at least the min wait (%s)", s.Retry.MaxWait, s.Retry.MinWait)
	check(s.Retry.Multiplier >= 1 && s.Retry.Multiplier <= 10, "retry multiplier (--retry-multiplier) must be 1 to 10, got %g", s.Retry.Multiplier)
	check(s.Retry.Jitter >= 0 && s.Retry.Jitter <= 1, "retry jitter (--retry-jitter) must be 0 to 1, got %g", s.Retry.Jitter)
	check(s.Breaker.Threshold >= 1, "breaker threshold (--breaker-threshold) must be at least 1, got %d", s.Breaker.Threshold)
	check(s.Breaker.OpenTime > 0, "breaker open time (--breaker-open-time) must be positive, got %s", s.Breaker.OpenTime)
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSettings, strings.Join(problems, "; "))
	}
	return nil
}
