// Package ratelimit shares providers' rate limits across every worker of a fleet.
//
// A provider declares budgets: a limit of weight per window, several windows at
// once (1,200 weight per minute and 50 orders per 10 s). Each window of a budget
// is a JetStream counter (a stream with allow_msg_counter): a call adds its weight
// with one Nats-Incr publish, and the server answers the window's new total. The
// call goes when every total is within its limit; otherwise it takes its weight
// back and waits for the next window. The server applies increments one at a
// time, so the sum of the weights admitted in a window never exceeds the limit,
// however many workers race. One round trip per budget, no read-modify-write
// retries: see docs/rate-limits.md for the comparison with KV compare-and-set.
//
// A provider that answers 429 or 418 asking to wait pauses it for the fleet: the
// pause is written to pause.<provider> in flow_ratelimits, every worker follows
// it, and it is announced on flow.breakers.<provider>.
package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/resilience"
)

// Bounds of the limiter's I/O.
const (
	countTimeout = 5 * time.Second  // one counter increment, when the call has no nearer deadline
	loadTimeout  = 10 * time.Second // reading the bucket at start
	writeTimeout = 5 * time.Second  // one pause written to KV
)

// headerIncr is the counter increment header of JetStream.
const headerIncr = "Nats-Incr"

// ErrCount is matched by the error of a call whose budgets could not be counted
// (NATS unreachable, the counters stream missing): the call is not made.
var ErrCount = errors.New("rate limit counters unavailable")

// Conn is the NATS connection (*nats.Conn).
type Conn interface {
	RequestMsgWithContext(ctx context.Context, msg *nats.Msg) (*nats.Msg, error)
	PublishMsg(msg *nats.Msg) error
	Publish(subject string, data []byte) error
}

// Observer is told of budgets used, waits and refusals, for metrics. It must not block.
type Observer interface {
	// BudgetUsed reports a window's total, over every worker, after an admission.
	BudgetUsed(provider, budget string, window time.Duration, used, limit int64)
	Waited(provider string)
	Refused(provider string)
}

// Config of a Limiter.
type Config struct {
	WorkerID string
	Subjects contract.Subjects
	// Budgets from the worker's configuration, by provider; those in the bucket
	// replace them provider by provider.
	Budgets  map[string]contract.RateLimits
	Observer Observer
}

// Limiter admits provider calls within the fleet's budgets. It implements
// resilience.Limiter and is safe for concurrent use.
type Limiter struct {
	conn Conn
	kv   jetstream.KeyValue
	cfg  Config
	log  zerolog.Logger
	now  func() time.Time

	mu     sync.RWMutex
	file   map[string][]budget
	live   map[string][]budget
	pauses map[string]contract.ProviderPause
	queue  []contract.ProviderPause
	wake   chan struct{}
}

// New returns a limiter; it fails when the configured budgets are invalid.
func New(conn Conn, kv jetstream.KeyValue, cfg Config, log zerolog.Logger) (*Limiter, error) {
	l := &Limiter{conn: conn, kv: kv, cfg: cfg, log: log, now: time.Now,
		file: map[string][]budget{}, live: map[string][]budget{}, pauses: map[string]contract.ProviderPause{}, wake: make(chan struct{}, 1)}
	for provider, rl := range cfg.Budgets {
		bs, err := compile(provider, rl)
		if err != nil {
			return nil, err
		}
		l.file[provider] = bs
	}
	return l, nil
}

// Admit implements resilience.Limiter.
func (l *Limiter) Admit(ctx context.Context, timeout time.Duration, a resilience.Admission) error {
	deadline := l.now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if a.NotAfter != nil && a.NotAfter.Before(deadline) {
		deadline = *a.NotAfter
	}
	for {
		until, why, err := l.try(ctx, a)
		if err != nil || until.IsZero() {
			return err
		}
		if until.After(deadline) {
			l.refused(a.Provider)
			return &resilience.RateLimitedError{Provider: a.Provider, Why: fmt.Sprintf(
				"%s; the next chance, at %s, is past the node's deadline %s (its timeout, the workflow's timeout or the request's not_after): "+
					"raise the budget, lower the node's weight, or give the node more time",
				why, until.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano))}
		}
		if l.cfg.Observer != nil {
			l.cfg.Observer.Waited(a.Provider)
		}
		if a.OnWait != nil {
			a.OnWait(until, why)
		}
		t := time.NewTimer(until.Sub(l.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (l *Limiter) refused(provider string) {
	if l.cfg.Observer != nil {
		l.cfg.Observer.Refused(provider)
	}
}

// try admits the call now, returning a zero time; or returns when to try again
// and why; or an error when the call can never be admitted.
func (l *Limiter) try(ctx context.Context, a resilience.Admission) (time.Time, string, error) {
	now := l.now()
	l.mu.RLock()
	p, paused := l.pauses[a.Provider]
	all, live := l.live[a.Provider]
	if !live {
		all = l.file[a.Provider]
	}
	l.mu.RUnlock()
	if paused && now.Before(p.Until) {
		return p.Until, fmt.Sprintf("provider %s paused for every worker until %s (%s)", a.Provider, p.Until.UTC().Format(time.RFC3339Nano), p.Reason), nil
	}
	bs, err := pick(a, all)
	if err != nil {
		l.refused(a.Provider)
		return time.Time{}, "", err
	}
	if len(bs) == 0 {
		return time.Time{}, "", nil
	}
	type count struct {
		subject string
		used    int64
		err     error
	}
	counts := make([]count, len(bs))
	for i, b := range bs {
		index := windowIndex(now, b.window)
		end := time.UnixMilli((index + 1) * b.window.Milliseconds())
		if !now.Before(end.Add(-b.margin)) {
			return end, fmt.Sprintf("budget %s of %s closes its window", b.name, a.Provider), nil
		}
		counts[i].subject = l.cfg.Subjects.RateLimit(a.Provider, b.name, b.window, index)
	}
	var wg sync.WaitGroup
	for i := range counts {
		wg.Go(func() { counts[i].used, counts[i].err = l.add(ctx, counts[i].subject, a.Weight) })
	}
	wg.Wait()
	var failed error
	var retry time.Time
	var full []string
	for i, b := range bs {
		switch {
		case counts[i].err != nil:
			failed = counts[i].err
		case counts[i].used > b.limit:
			end := time.UnixMilli((windowIndex(now, b.window) + 1) * b.window.Milliseconds())
			if end.After(retry) {
				retry = end
			}
			full = append(full, fmt.Sprintf("budget %s (%d per %s) is used up in this window", b.name, b.limit, b.window))
		}
	}
	if failed == nil && len(full) == 0 {
		if l.cfg.Observer != nil {
			for i, b := range bs {
				l.cfg.Observer.BudgetUsed(a.Provider, b.name, b.window, counts[i].used, b.limit)
			}
		}
		return time.Time{}, "", nil
	}
	for i := range counts { // take the weight back from every window it was added to
		if counts[i].err == nil {
			l.takeBack(counts[i].subject, a.Weight)
		}
	}
	if failed != nil {
		l.refused(a.Provider)
		return time.Time{}, "", failed
	}
	return retry, fmt.Sprintf("provider %s: %s", a.Provider, strings.Join(full, "; ")), nil
}

// pick returns the budgets a call draws from; an error names what is wrong.
func pick(a resilience.Admission, all []budget) ([]budget, error) {
	bs := all
	if len(a.Budgets) > 0 {
		bs = make([]budget, 0, len(a.Budgets))
		for _, name := range a.Budgets {
			i := slices.IndexFunc(all, func(b budget) bool { return b.name == name })
			if i < 0 {
				names := make([]string, len(all))
				for j, b := range all {
					names[j] = b.name
				}
				return nil, &resilience.RateLimitedError{Provider: a.Provider, Why: fmt.Sprintf(
					"the node draws from budget %q, which provider %s does not declare (declared: %s); declare it in the worker's --rate-limits file or in %s %s, or fix the node's budgets",
					name, a.Provider, orNone(names), contract.BucketRateLimits, contract.RateBudgetsKey(a.Provider))}
			}
			bs = append(bs, all[i])
		}
	}
	for _, b := range bs {
		if a.Weight > b.limit {
			return nil, &resilience.RateLimitedError{Provider: a.Provider, Why: fmt.Sprintf(
				"the node's weight %d is more than budget %s allows in a whole window (%d per %s): lower the weight or raise the limit",
				a.Weight, b.name, b.limit, b.window)}
		}
	}
	return bs, nil
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// add adds weight to a window's counter and returns its new total.
func (l *Limiter) add(ctx context.Context, subject string, weight int64) (int64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, countTimeout)
		defer cancel()
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(headerIncr, strconv.FormatInt(weight, 10))
	reply, err := l.conn.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return 0, fmt.Errorf("%w: count %s: stream %s is missing; restart a worker to create it", ErrCount, subject, contract.StreamRateLimits)
		}
		return 0, fmt.Errorf("%w: count %s: %v; check the NATS connection", ErrCount, subject, err)
	}
	var ack struct {
		Value string `json:"val"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return 0, fmt.Errorf("%w: count %s: unreadable answer: %v", ErrCount, subject, err)
	}
	if ack.Error != nil {
		return 0, fmt.Errorf("%w: count %s: %s; check that stream %s allows counters", ErrCount, subject, ack.Error.Description, contract.StreamRateLimits)
	}
	used, err := strconv.ParseInt(ack.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: count %s: unreadable total %q", ErrCount, subject, ack.Value)
	}
	return used, nil
}

// takeBack removes weight from a window's counter without waiting for the answer:
// should it be lost, the window only counts more than was admitted.
func (l *Limiter) takeBack(subject string, weight int64) {
	msg := nats.NewMsg(subject)
	msg.Header.Set(headerIncr, strconv.FormatInt(-weight, 10))
	if err := l.conn.PublishMsg(msg); err != nil {
		l.log.Warn().Err(err).Str("subject", subject).Msg("take back a refused call's weight")
	}
}

// Backoff implements resilience.Limiter: it pauses the provider on this worker at
// once, and queues the pause for the fleet.
func (l *Limiter) Backoff(provider string, until time.Time, reason string) {
	p := contract.ProviderPause{Provider: provider, Until: until.UTC(), Reason: reason, WorkerID: l.cfg.WorkerID, Time: l.now().UTC()}
	if !l.pause(p) {
		return
	}
	l.mu.Lock()
	l.queue = append(l.queue, p)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pause applies a pause unless one as long holds; it reports whether it did.
func (l *Limiter) pause(p contract.ProviderPause) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.pauses[p.Provider]; ok && !p.Until.After(cur.Until) {
		return false
	}
	l.pauses[p.Provider] = p
	return true
}

// windowIndex numbers the windows of a budget from the Unix epoch.
func windowIndex(t time.Time, window time.Duration) int64 {
	return t.UnixMilli() / window.Milliseconds()
}
