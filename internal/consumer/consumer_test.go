package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/natstest"
)

// cause records how a handler's context ended.
type cause struct {
	mu      sync.Mutex
	started bool
	err     error
}

func (c *cause) get() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started, c.err
}

// run starts a consumer of one stream whose handler holds its message until its
// context ends, and publishes one message.
func run(t *testing.T, srv *natstest.Server, ackWait time.Duration) *cause {
	t.Helper()
	js := natstest.JetStream(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	c := &cause{}
	handler := func(ctx context.Context, _ jetstream.Msg) consumer.Outcome {
		c.mu.Lock()
		c.started = true
		c.mu.Unlock()
		<-ctx.Done()
		c.mu.Lock()
		c.err = context.Cause(ctx)
		c.mu.Unlock()
		return consumer.Outcome{Decision: consumer.Nak}
	}
	cons, err := consumer.New(js, consumer.Config{Stream: "S", AckWait: ackWait, ShutdownGrace: time.Second}, handler, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); cons.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := js.Publish(ctx, "s.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if started, _ := c.get(); !started {
			return errors.New("handler not started")
		}
		return nil
	})
	return c
}

// A handler whose heartbeats the server cannot confirm (here the server is gone)
// is cancelled with ErrLeaseLost: the server may give its message to another
// worker once the ack wait has passed, and the work must not run twice.
func TestUnconfirmedHeartbeatsStopTheHandler(t *testing.T) {
	srv := natstest.Start(t)
	c := run(t, srv, time.Second)
	srv.Shutdown()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if _, err := c.get(); !errors.Is(err, consumer.ErrLeaseLost) {
			return errors.New("handler still running")
		}
		return nil
	})
}
