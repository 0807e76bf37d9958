package resilience

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State of a circuit breaker.
type State string

// Breaker states.
const (
	StateClosed   State = "closed"
	StateOpen     State = "open"
	StateHalfOpen State = "half_open"
)

func stateOf(s gobreaker.State) State {
	switch s {
	case gobreaker.StateOpen:
		return StateOpen
	case gobreaker.StateHalfOpen:
		return StateHalfOpen
	}
	return StateClosed
}

// StateChange is a breaker that changed state by itself.
type StateChange struct {
	Provider string
	From, To State
	At       time.Time
	// Until is when an open breaker lets a probe through.
	Until time.Time
	// LastError is the last failure the breaker counted.
	LastError string
}

// Hold refuses a provider's calls from outside its breaker: an operator's order,
// or a breaker open on another worker of the cluster.
type Hold struct {
	// Why is the reason given to the refused calls.
	Why string
	// Until ends the hold; zero holds until released.
	Until time.Time
}

func (h *Hold) holds(now time.Time) bool {
	return h != nil && (h.Until.IsZero() || now.Before(h.Until))
}

// Breakers holds one circuit breaker per provider (sony/gobreaker), shared by every
// call of the worker, created on first use. A breaker opens after Threshold
// consecutive failed attempts, refuses every call for OpenTime, then lets one probe
// through (half-open): its success closes the breaker, its failure opens it again.
// Only failures count: attempt timeouts and transient errors. Successes reset the
// count; other errors (cancellations, invalid requests, a provider's refusal such as
// an HTTP 4xx) are neither, so one bot's bad requests cannot open a provider for all.
//
// Holds refuse calls besides the breaker: an operator's forced open (Force), or an
// open breaker of another worker in cluster scope (Follow).
type Breakers struct {
	settings  BreakerSettings
	isFailure func(error) bool
	onChange  func(StateChange)
	now       func() time.Time

	mu sync.RWMutex
	m  map[string]*breaker
}

type breaker struct {
	provider  string
	owner     *Breakers
	cb        atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	openUntil atomic.Int64 // unix nanoseconds
	lastErr   atomic.Pointer[string]
	forced    atomic.Pointer[Hold]
	cluster   atomic.Pointer[Hold]
}

func newBreakers(s BreakerSettings, isFailure func(error) bool, onChange func(StateChange)) *Breakers {
	return &Breakers{settings: s, isFailure: isFailure, onChange: onChange, now: time.Now, m: make(map[string]*breaker)}
}

// get returns the breaker of a provider, creating it on first use.
func (bs *Breakers) get(provider string) *breaker {
	bs.mu.RLock()
	b, ok := bs.m[provider]
	bs.mu.RUnlock()
	if ok {
		return b
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b, ok = bs.m[provider]; ok {
		return b
	}
	b = &breaker{provider: provider, owner: bs}
	b.cb.Store(b.newCircuitBreaker())
	bs.m[provider] = b
	return b
}

func (b *breaker) newCircuitBreaker() *gobreaker.CircuitBreaker[struct{}] {
	threshold := b.owner.settings.Threshold
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        b.provider,
		MaxRequests: 1, // one probe when half-open
		Timeout:     b.owner.settings.OpenTime,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= threshold },
		// The chain marks what is not a failure; see Breakers.
		IsExcluded:    func(err error) bool { _, ok := err.(*notFailure); return ok },
		OnStateChange: b.changed,
	})
}

// changed runs under the gobreaker's lock: it must not block nor call the breaker.
func (b *breaker) changed(_ string, from, to gobreaker.State) {
	now := b.owner.now()
	c := StateChange{Provider: b.provider, From: stateOf(from), To: stateOf(to), At: now}
	if to == gobreaker.StateOpen {
		c.Until = now.Add(b.owner.settings.OpenTime)
		b.openUntil.Store(c.Until.UnixNano())
	}
	if last := b.lastErr.Load(); last != nil {
		c.LastError = *last
	}
	if b.owner.onChange != nil {
		b.owner.onChange(c)
	}
}

// notFailure carries an error the breaker must not count; the chain unwraps it.
type notFailure struct{ err error }

func (e *notFailure) Error() string { return e.err.Error() }

// refusal returns the error of a call refused by a hold, or nil.
func (b *breaker) refusal(now time.Time) error {
	if h := b.forced.Load(); h.holds(now) {
		return &CircuitOpenError{Provider: b.provider, Why: h.Why}
	}
	if h := b.cluster.Load(); h.holds(now) {
		return &CircuitOpenError{Provider: b.provider, Why: h.Why}
	}
	return nil
}

// openError explains a call refused by the gobreaker itself.
func (b *breaker) openError(halfOpen bool) error {
	if halfOpen {
		return &CircuitOpenError{Provider: b.provider, Why: "a probe call is testing whether the provider is back"}
	}
	why := fmt.Sprintf("%d consecutive failed attempts on this worker", b.owner.settings.Threshold)
	if last := b.lastErr.Load(); last != nil {
		why += " (last: " + *last + ")"
	}
	until := time.Unix(0, b.openUntil.Load()).UTC().Format(time.RFC3339)
	return &CircuitOpenError{Provider: b.provider, Why: why + "; a probe goes through at " + until +
		" (if the provider is known to be back: publisher breaker close " + b.provider + ")"}
}

// Force holds a provider's breaker open for every call of this worker, as an
// operator ordered; nil releases the hold.
func (bs *Breakers) Force(provider string, h *Hold) { bs.get(provider).forced.Store(h) }

// Follow holds a provider's breaker open because it is open on another worker of
// the cluster; nil releases the hold.
func (bs *Breakers) Follow(provider string, h *Hold) { bs.get(provider).cluster.Store(h) }

// Reset replaces a provider's breaker with a closed one, forgetting its counts,
// and returns the state it replaced. It is not reported to the listener: the
// caller, who ordered it, reports it.
func (bs *Breakers) Reset(provider string) State {
	b := bs.get(provider)
	old := b.cb.Swap(b.newCircuitBreaker())
	b.lastErr.Store(nil)
	return stateOf(old.State())
}

// State returns the state of a provider's own breaker, holds aside.
func (bs *Breakers) State(provider string) State {
	return stateOf(bs.get(provider).cb.Load().State())
}
