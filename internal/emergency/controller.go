package emergency

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
)

// DefaultStaleness is how long the controller trusts its state without confirming
// that it has applied every command in the stream.
const DefaultStaleness = 2 * time.Second

var (
	// ErrStale is returned while the controller cannot confirm the current emergency
	// state: its follower is broken or disconnected for longer than the staleness.
	ErrStale = errors.New("emergency state unknown: the emergency stream cannot be confirmed; nothing new starts and no order is placed until it is")
	// ErrPaused is returned by CanTrade for an order that is not reduce-only while a
	// covering scope is paused.
	ErrPaused = errors.New("trading paused")
)

// PausedError says which scope paused trading, and why. It matches ErrPaused.
type PausedError struct {
	Scope  string
	Reason string
}

func (p *PausedError) Error() string {
	return fmt.Sprintf("trading paused by %s (%s): only reduce-only orders go through until a resume", p.Scope, p.Reason)
}

// Is makes a PausedError match ErrPaused.
func (p *PausedError) Is(target error) bool { return target == ErrPaused }

// Config of a controller.
type Config struct {
	Subjects contract.Subjects
	// Staleness bounds how long the state is trusted without confirming it against
	// the stream; default DefaultStaleness.
	Staleness time.Duration
}

// Controller follows the emergency stream and enforces its state. It is safe for
// concurrent use.
type Controller struct {
	js  jetstream.JetStream
	cfg Config
	log zerolog.Logger
	now func() time.Time

	mu        sync.Mutex
	board     Board
	created   time.Time // creation time of the stream the board was built from
	processed uint64    // stream sequence of the last applied command
	lastOK    time.Time // when the follower was last confirmed caught up
	watches   map[*watch]struct{}
	onChange  []func(ScopeState)
	changed   chan struct{} // closed and replaced at each command and confirmation
}

type watch struct {
	scopes []string
	cancel context.CancelCauseFunc
}

// New returns a controller; Run starts following.
func New(js jetstream.JetStream, cfg Config, log zerolog.Logger) *Controller {
	if cfg.Staleness <= 0 {
		cfg.Staleness = DefaultStaleness
	}
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects.Prefix = contract.DefaultPrefix
	}
	return &Controller{js: js, cfg: cfg, log: log, now: time.Now, board: Board{}, watches: map[*watch]struct{}{}, changed: make(chan struct{})}
}

// OnChange registers fn to be called with a scope's new state after each command
// (for logs and metrics). fn must not block.
func (c *Controller) OnChange(fn func(ScopeState)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, fn)
}

// Changed returns a channel that is closed when a command is applied or the state
// is confirmed after it was not: who waits for the state to be confirmed, or a
// scope to change, takes the channel, checks, then waits on it.
func (c *Controller) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *Controller) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Ready reports whether the state is loaded and confirmed.
func (c *Controller) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.freshLocked()
}

func (c *Controller) freshLocked() bool {
	return !c.lastOK.IsZero() && c.now().Sub(c.lastOK) <= c.cfg.Staleness
}

// Board returns a copy of every scope's state.
func (c *Controller) Board() Board {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(Board, len(c.board))
	for k, v := range c.board {
		s := *v
		out[k] = &s
	}
	return out
}

// CanOperate returns a *contract.HaltError when a scope covering s is halted, and
// ErrStale when the state cannot be confirmed.
func (c *Controller) CanOperate(s Scopes) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.board.Strictest(s.List()); st.State == Halted {
		return &contract.HaltError{Scope: st.Scope, Reason: st.Reason}
	}
	if !c.freshLocked() {
		return ErrStale
	}
	return nil
}

// CanTrade returns a *contract.HaltError when a covering scope is halted, a
// *PausedError when one is paused and the order is not reduce-only, and ErrStale when
// the state cannot be confirmed.
func (c *Controller) CanTrade(s Scopes, reduceOnly bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.board.Strictest(s.List())
	switch {
	case st.State == Halted:
		return &contract.HaltError{Scope: st.Scope, Reason: st.Reason}
	case !c.freshLocked():
		return ErrStale
	case st.State == Paused && !reduceOnly:
		return &PausedError{Scope: st.Scope, Reason: st.Reason}
	}
	return nil
}

// Watch cancels an execution covered by s with a *contract.HaltError as soon as a
// halt covering it is applied (at once if one already stands), until stop is called.
func (c *Controller) Watch(s Scopes, cancel context.CancelCauseFunc) (stop func()) {
	w := &watch{scopes: s.List(), cancel: cancel}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.board.Strictest(w.scopes); st.State == Halted {
		cancel(&contract.HaltError{Scope: st.Scope, Reason: st.Reason})
		return func() {}
	}
	c.watches[w] = struct{}{}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.watches, w)
	}
}

// Run follows the emergency stream until ctx ends, rebuilding the follower whenever
// it breaks: after reconnects, server restarts, a deleted consumer or a recreated
// stream.
func (c *Controller) Run(ctx context.Context) {
	retry := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	for ctx.Err() == nil {
		err := c.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		wait := retry.NextBackOff()
		c.log.Warn().Err(err).Dur("retry_in", wait).Msg("emergency follower restarting")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// errResync ends a follower whose stream was recreated or fell behind.
var errResync = errors.New("emergency follower out of sync")

// follow applies commands from the stream and confirms, every quarter of the
// staleness, that it has applied all of them. It returns when the follower must be
// rebuilt.
func (c *Controller) follow(ctx context.Context) error {
	stream, err := c.js.Stream(ctx, contract.StreamEmergency)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", contract.StreamEmergency, err)
	}
	recreated, err := Recreated(ctx, c.js, stream)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if created := stream.CachedInfo().Created; !created.Equal(c.created) {
		if !c.created.IsZero() {
			c.log.Warn().Msg("emergency stream was recreated; rebuilding the emergency state from it")
			recreated = true
		}
		// Nothing is confirmed of the new stream until the follower catches up.
		c.board, c.processed, c.created, c.lastOK = Board{}, 0, created, time.Time{}
		if recreated {
			c.board.SeedRecreated()
		}
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.cfg.Subjects.EmergencyAll()},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if c.processed > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, c.processed+1
	}
	c.mu.Unlock()

	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("follow %s: %w", contract.StreamEmergency, err)
	}
	cc, err := cons.Consume(c.apply)
	if err != nil {
		return fmt.Errorf("follow %s: %w", contract.StreamEmergency, err)
	}
	defer cc.Stop()

	started := c.now()
	interval := max(c.cfg.Staleness/4, 50*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := c.confirm(ctx, stream, started, interval); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// RecreatedReason is the reason of the global halt that a recreated emergency
// stream stands for until a resume of scope global is stored in it.
const RecreatedReason = "the emergency stream was recreated, and the halts it held are unknown: trading stays halted until an operator checks and resumes scope global"

// Recreated reports whether the emergency stream is not the one provisioned with
// the other streams: it carries the mark of `emergency init`, or it was created
// after FLOW_EXEC (provisioning creates it first). Such a stream counts as a global
// halt until a global resume is stored (see SeedRecreated): its earlier halts are
// gone.
func Recreated(ctx context.Context, js jetstream.StreamManager, stream jetstream.Stream) (bool, error) {
	info := stream.CachedInfo()
	if _, ok := info.Config.Metadata[contract.MetadataRecreated]; ok {
		return true, nil
	}
	exec, err := js.Stream(ctx, contract.StreamExec)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil // a fresh deployment, provisioning in progress
	}
	if err != nil {
		return false, fmt.Errorf("open stream %s: %w", contract.StreamExec, err)
	}
	return info.Created.After(exec.CachedInfo().Created), nil
}

// SeedRecreated starts the board of a recreated emergency stream with the global
// halt it stands for, before any of its commands is applied.
func (b Board) SeedRecreated() {
	b.Apply(ScopeGlobal, contract.EmergencyCommand{Action: ActionHalt, Reason: RecreatedReason}, 0)
}

// confirm checks the stream's last sequence against the last applied command. It
// returns an error only when the follower must be rebuilt: the stream changed, or the
// follower (started at started) has not caught up within the staleness. The check
// gets one interval: a request lost with a dropped connection is then asked again
// before the staleness has passed, instead of using it all up waiting.
func (c *Controller) confirm(ctx context.Context, stream jetstream.Stream, started time.Time, timeout time.Duration) error {
	asked := c.now() // the state is confirmed as of when the question left
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := stream.Info(pctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.lastOK
	if started.After(last) {
		last = started
	}
	stale := c.now().Sub(last) > c.cfg.Staleness
	switch {
	case err != nil:
		if stale {
			return fmt.Errorf("confirm emergency state: %w", err)
		}
	case !info.Created.Equal(c.created) || info.State.LastSeq < c.processed:
		return errResync
	case info.State.LastSeq <= c.processed:
		wasFresh := c.freshLocked()
		c.lastOK = asked
		if !wasFresh {
			c.notifyLocked()
		}
	case stale:
		return fmt.Errorf("%w: applied up to %d, stream at %d", errResync, c.processed, info.State.LastSeq)
	}
	return nil
}

// apply applies one command and cancels the executions a halt covers. The halt
// comes first: logs and callbacks wait until every covered execution is cancelled.
func (c *Controller) apply(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if meta.Sequence.Stream <= c.processed {
		return // already applied before the follower was rebuilt
	}
	c.processed = meta.Sequence.Stream
	scope := c.board.ApplyMessage(strings.TrimPrefix(msg.Subject(), c.cfg.Subjects.Emergency("")), msg.Data(), meta.Sequence.Stream)
	st := c.board[scope]
	if st.State == Halted {
		halt := &contract.HaltError{Scope: scope, Reason: st.Reason}
		for w := range c.watches {
			if slices.Contains(w.scopes, scope) {
				w.cancel(halt)
				delete(c.watches, w)
			}
		}
	}
	st.AppliedAt = c.now()
	c.notifyLocked()
	ev := c.log.Info()
	if st.State != Active {
		ev = c.log.Warn()
	}
	ev.Str("scope", scope).Str("state", st.State).Str("reason", st.Reason).Str("issued_by", st.IssuedBy).
		Str("ignored", st.Ignored).Msg("emergency state changed")
	for _, fn := range c.onChange {
		fn(*st)
	}
}
