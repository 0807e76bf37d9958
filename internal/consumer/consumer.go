// Package consumer runs the pull loop of a durable JetStream consumer: it fetches
// only as many messages as it has free slots, runs a handler per message with
// in-progress heartbeats, then acks, naks or terms as the handler decides. It heals
// itself when the consumer is deleted or the connection drops, and on shutdown it
// lets in-flight messages finish within a grace period, then hands the rest back.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Defaults of Config.
const (
	DefaultDurable = "flowguard-workers"
	// DefaultAckWait is short so that a dead worker's requests are taken over
	// within seconds; confirmed heartbeats keep live ones (see heartbeat).
	DefaultAckWait       = 2 * time.Second
	DefaultMaxDeliver    = 5
	DefaultMaxAckPending = 1000
	DefaultConcurrency   = 16
	DefaultShutdownGrace = 30 * time.Second
	fetchExpiry          = 5 * time.Second
	gateCheckInterval    = 50 * time.Millisecond
)

var (
	// ErrShutdown is the cancellation cause of handlers still running when the
	// shutdown grace period ends.
	ErrShutdown = errors.New("worker shutting down")
	// ErrLeaseLost is the cancellation cause of a handler whose heartbeats the
	// server has not confirmed for so long that it may soon give the message to
	// another worker: it stops rather than run the work twice.
	ErrLeaseLost = errors.New("heartbeats unconfirmed for longer than the ack wait allows; the request may be running elsewhere")
	// ErrConflict is matched by the error returned when the durable consumer exists
	// with settings that differ from this worker's.
	ErrConflict = errors.New("existing consumer configuration conflicts")
)

// Decision is what to do with a message once handled.
type Decision int

// Decisions.
const (
	// Ack: the message is done with (its terminal state is persisted).
	Ack Decision = iota
	// Nak: hand the message back for a later delivery, after Delay.
	Nak
	// Term: never deliver the message again.
	Term
	// Abandon: leave the message unsettled. The handler no longer holds it (the
	// server has given it to another worker): settling this stale delivery would
	// act on the other worker's.
	Abandon
)

// Outcome is a handler's decision about one message.
type Outcome struct {
	Decision Decision
	Delay    time.Duration // Nak only
	Reason   string        // Term only
}

// Handler handles one message. ctx ends when the shutdown grace period is over;
// the handler then returns promptly, usually with Nak.
type Handler func(ctx context.Context, msg jetstream.Msg) Outcome

// Config of a consumer.
type Config struct {
	Stream        string
	Durable       string
	FilterSubject string
	// Concurrency is how many messages are handled at once.
	Concurrency int
	// AckWait is how long the server waits for an ack before redelivering; handlers
	// send confirmed in-progress heartbeats every AckWait/4 while they run.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of a message; 0 means DefaultMaxDeliver. The
	// handler enforces it (the server's bound is off), so that a message is never
	// left unsettled on a last delivery.
	MaxDeliver int
	// BackOff, when set, spaces redeliveries after missed acks (see JetStream's consumer BackOff).
	BackOff       []time.Duration
	MaxAckPending int
	// ShutdownGrace is how long in-flight handlers may run after shutdown begins.
	ShutdownGrace time.Duration
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if c.Stream == "" {
		return errors.New("consumer: stream is required")
	}
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency must be at least 1, got %d", c.Concurrency)
	case c.AckWait < time.Second:
		return fmt.Errorf("ack wait must be at least 1s, got %s", c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("max deliver must be at least 1, got %d", c.MaxDeliver)
	case c.MaxAckPending < c.Concurrency:
		return fmt.Errorf("max ack pending (%d) must be at least the concurrency (%d)", c.MaxAckPending, c.Concurrency)
	case len(c.BackOff) > c.MaxDeliver:
		return fmt.Errorf("redelivery backoff has %d steps, more than max deliver (%d)", len(c.BackOff), c.MaxDeliver)
	case slices.ContainsFunc(c.BackOff, func(d time.Duration) bool { return d < time.Second }):
		return fmt.Errorf("redelivery backoff steps must be at least 1s, got %v", c.BackOff)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("shutdown grace must not be negative, got %s", c.ShutdownGrace)
	}
	return nil
}

// MetaMaxDeliver is the consumer metadata key holding the workers' max deliver:
// the server's own bound is off, so the workers' value is stored beside it.
const MetaMaxDeliver = "flowguard_max_deliver"

// ServerConfig is the JetStream consumer configuration, as the server stores it.
// The server does not bound deliveries: the handler dead-letters a message past
// MaxDeliver (kept in the metadata), and a message whose handler fails to settle it
// is delivered again rather than left behind. With a redelivery backoff, the
// server takes its first step as the ack wait.
func (c Config) ServerConfig() jetstream.ConsumerConfig {
	ackWait := c.AckWait
	if len(c.BackOff) > 0 {
		ackWait = c.BackOff[0]
	}
	return jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   "flowguard workers share this consumer",
		FilterSubject: c.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		BackOff:       c.BackOff,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Metadata:      map[string]string{MetaMaxDeliver: strconv.Itoa(c.MaxDeliver)},
	}
}

// Conflicts lists how a consumer's configuration, as the server stores it, differs
// from what this worker needs, each with the flag that sets it. A consumer made by
// an earlier version holds no max deliver, which is then not compared.
func (c Config) Conflicts(have jetstream.ConsumerConfig) []string {
	want := c.ServerConfig()
	var diffs []string
	diff := func(field string, have, want any) {
		if fmt.Sprint(have) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("%s is %v, this worker's is %v", field, have, want))
		}
	}
	if len(c.BackOff) == 0 {
		diff("ack wait (--ack-wait)", have.AckWait, want.AckWait)
	}
	diff("redelivery backoff (--redelivery-backoff)", have.BackOff, want.BackOff)
	if stored, ok := have.Metadata[MetaMaxDeliver]; ok {
		diff("max deliver (--max-deliver)", stored, want.Metadata[MetaMaxDeliver])
	}
	diff("server max deliver", have.MaxDeliver, want.MaxDeliver)
	diff("filter subject", have.FilterSubject, want.FilterSubject)
	diff("ack policy", have.AckPolicy, want.AckPolicy)
	return diffs
}

// deadline is how long the server waits for an ack or a heartbeat before it
// redelivers: the ack wait, or the shortest redelivery backoff step when set (the
// server uses those instead).
func deadline(cfg jetstream.ConsumerConfig) time.Duration {
	d := cfg.AckWait
	for _, b := range cfg.BackOff {
		d = min(d, b)
	}
	return d
}

// Consumer pulls messages of one durable consumer.
type Consumer struct {
	js      jetstream.JetStream
	cfg     Config
	handler Handler
	gate    func() error
	log     zerolog.Logger

	mu       sync.Mutex
	consumer jetstream.Consumer
	bound    bool
	// lease is the server's redelivery deadline of the bound consumer: heartbeats
	// go out every third of it.
	lease time.Duration
}

// Option configures a Consumer.
type Option func(*Consumer)

// WithGate makes the consumer fetch nothing while gate returns an error: messages
// stay in the stream, their delivery count untouched.
func WithGate(gate func() error) Option {
	return func(c *Consumer) { c.gate = gate }
}

// New returns a consumer; Run binds it.
func New(js jetstream.JetStream, cfg Config, handler Handler, log zerolog.Logger, opts ...Option) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Consumer{js: js, cfg: cfg, handler: handler, log: log, gate: func() error { return nil }}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Bound reports whether the consumer is bound to the server (for readiness).
func (c *Consumer) Bound() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bound
}

func (c *Consumer) setBound(cons jetstream.Consumer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.consumer, c.bound = cons, cons != nil
	if cons != nil {
		c.lease = deadline(cons.CachedInfo().Config)
	}
}

func (c *Consumer) leaseTime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease
}

// bind binds the durable consumer, creating it when it is missing. An existing one
// whose settings differ from this worker's is reported, never changed: the workers
// sharing it must agree on them, or one would redeliver the others' live work.
func (c *Consumer) bind(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = c.js.CreateConsumer(ctx, c.cfg.Stream, c.cfg.ServerConfig())
		if errors.Is(err, jetstream.ErrConsumerExists) { // another worker was quicker
			cons, err = c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable)
		}
	}
	if err == nil {
		if diffs := c.cfg.Conflicts(cons.CachedInfo().Config); len(diffs) > 0 {
			err = fmt.Errorf("%w: %s; start this worker with the settings of the others, or change them for all "+
				"(nats consumer edit %s %s, or delete the consumer while no worker runs)",
				ErrConflict, strings.Join(diffs, "; "), c.cfg.Stream, c.cfg.Durable)
		}
	}
	if err != nil {
		c.setBound(nil)
		return nil, fmt.Errorf("bind consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	c.setBound(cons)
	c.log.Info().Str("consumer", c.cfg.Durable).Str("stream", c.cfg.Stream).Msg("consumer bound")
	return cons, nil
}

// Bind binds the consumer once, so that a worker whose settings conflict with the
// existing consumer's stops at start with ErrConflict. Other errors are retried by Run.
func (c *Consumer) Bind(ctx context.Context) error {
	_, err := c.bind(ctx)
	if errors.Is(err, ErrConflict) {
		return err
	}
	return nil
}

// Run handles messages until ctx ends, binding (again) whenever the consumer is
// unbound. Then it stops fetching, gives in-flight handlers the shutdown grace
// period, cancels the rest (they hand their messages back) and returns once every
// handler has returned.
func (c *Consumer) Run(ctx context.Context) {
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(ErrShutdown)

	slots := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	c.fetchLoop(ctx, workCtx, slots, &wg)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(c.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		c.log.Warn().Dur("grace", c.cfg.ShutdownGrace).Int("in_flight", len(slots)).Msg("shutdown grace over, handing back unfinished requests")
		cancelWork(ErrShutdown)
		<-done
	}
	c.setBound(nil)
}

// fetchLoop fetches as many messages as there are free slots, until ctx ends.
func (c *Consumer) fetchLoop(ctx, workCtx context.Context, slots chan struct{}, wg *sync.WaitGroup) {
	retry := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	c.mu.Lock()
	cons := c.consumer
	c.mu.Unlock()
	gated := false
	for ctx.Err() == nil {
		if cons == nil {
			var err error
			if cons, err = c.bind(ctx); err != nil {
				c.pause(ctx, retry, err)
				continue
			}
		}
		if err := c.gate(); err != nil {
			if !gated {
				c.log.Warn().Err(err).Msg("not taking requests until this clears")
				gated = true
			}
			sleep(ctx, gateCheckInterval)
			continue
		}
		if gated {
			c.log.Info().Msg("taking requests again")
			gated = false
		}
		// Wait for at least one free slot, then take all free ones.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		free := 1
	fill:
		for free < c.cfg.Concurrency {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		got, err := c.fetch(ctx, workCtx, cons, free, slots, wg)
		for range free - got {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			cons = nil // rebind: the consumer may have been deleted or the server restarted
			c.pause(ctx, retry, err)
			continue
		}
		retry.Reset()
	}
}

// fetch pulls up to n messages and starts a handler for each as it arrives. It
// returns how many it started.
func (c *Consumer) fetch(ctx, workCtx context.Context, cons jetstream.Consumer, n int, slots chan struct{}, wg *sync.WaitGroup) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, fetchExpiry)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, fmt.Errorf("fetch: %w", err)
	}
	started := 0
	for msg := range batch.Messages() {
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			c.handle(workCtx, msg)
		}()
	}
	// The request expiring (or the fetch context ending) is not an error.
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return started, fmt.Errorf("fetch: %w", err)
	}
	return started, nil
}

// handle runs the handler with heartbeats, then settles the message.
func (c *Consumer) handle(ctx context.Context, msg jetstream.Msg) {
	ctx, stopHandler := context.WithCancelCause(ctx)
	defer stopHandler(nil)
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	go c.heartbeat(hbCtx, msg, time.Now(), stopHandler)
	out := c.handler(ctx, msg)
	stopHeartbeat()

	// Settle even when ctx has ended: a nak hands the message back at once. A
	// plain ack, not a confirmed one: the handler acks only once the terminal state
	// is stored, so should the ack be lost, the redelivery finds that state and is
	// acknowledged without running again; confirming would cost a round trip on
	// every request to save one on the rare lost ack.
	var err error
	switch out.Decision {
	case Ack:
		err = msg.Ack()
	case Nak:
		if out.Delay > 0 {
			err = msg.NakWithDelay(out.Delay)
		} else {
			err = msg.Nak()
		}
	case Term:
		err = msg.TermWithReason(out.Reason)
	case Abandon:
		return
	}
	if err != nil {
		// The server redelivers after AckWait; the handler's persisted state makes that harmless.
		c.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("settle message failed; it will be redelivered")
	}
}

// heartbeat tells the server the message is still being worked on, every quarter
// of its redelivery deadline (the lease), and confirms that the server got it: an
// in-progress ack, then a flush (a PING answered by the server) with a deadline. A
// heartbeat confirmed after being sent at t holds the message until t + lease.
// When none has been confirmed for the lease less a quarter, the server may soon
// give the message to another worker: the handler is cancelled with ErrLeaseLost
// before that, so that the work does not run twice. A worker paused longer (a
// stopped process) finds its lease gone when it wakes; its writes are then
// refused by the execution's fencing anyway.
func (c *Consumer) heartbeat(ctx context.Context, msg jetstream.Msg, received time.Time, cancel context.CancelCauseFunc) {
	lease := c.leaseTime()
	margin := lease / 4
	t := time.NewTicker(lease / 4)
	defer t.Stop()
	confirmed := received // the server started the lease a little before
	lost := func() bool {
		if time.Since(confirmed) < lease-margin {
			return false
		}
		c.log.Warn().Str("subject", msg.Subject()).Dur("unconfirmed", time.Since(confirmed)).Msg("heartbeats unconfirmed too long; stopping the request so that it does not run twice")
		cancel(ErrLeaseLost)
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if lost() {
			return
		}
		sent := time.Now()
		err := msg.InProgress()
		if err == nil {
			err = c.js.Conn().FlushTimeout(margin)
		}
		if err == nil {
			confirmed = sent
		} else {
			c.log.Debug().Err(err).Str("subject", msg.Subject()).Msg("in-progress heartbeat unconfirmed")
		}
		if ctx.Err() == nil && lost() {
			return
		}
	}
}

func (c *Consumer) pause(ctx context.Context, b backoff.BackOff, err error) {
	wait := b.NextBackOff()
	c.log.Warn().Err(err).Dur("retry_in", wait).Msg("consumer unavailable, retrying")
	sleep(ctx, wait)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
