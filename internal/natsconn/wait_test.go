package natsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/natstest"
)

// syncBuffer is a log sink safe for the connection's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeURL(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	return fmt.Sprintf("nats://127.0.0.1:%d", port), port
}

// TestWaitConnectsOnceTheServerIsUp: Wait logs that it waits, and connects when
// the server starts.
func TestWaitConnectsOnceTheServerIsUp(t *testing.T) {
	url, port := freeURL(t)
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := Wait(ctx, Options{URL: url}, "test", zerolog.New(&logs))
		done <- result{nc, err}
	}()
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), "waiting for the NATS server") {
			return errors.New("Wait has not said that it waits")
		}
		return nil
	})
	natstest.StartWith(t, &server.Options{Port: port})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.nc.Close()
}

// TestWaitGivesUpOnWhatWaitingCannotFix: refused credentials end Wait at once; an
// absent server ends it with its context, saying what it waited for.
func TestWaitGivesUpOnWhatWaitingCannotFix(t *testing.T) {
	srv := natstest.StartWith(t, &server.Options{Username: "u", Password: "right"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Wait(ctx, Options{URL: srv.URL(), User: "u", Password: "wrong"}, "test", zerolog.Nop())
	if !errors.Is(err, nats.ErrAuthorization) || !Refused(err) || ctx.Err() != nil {
		t.Errorf("refused credentials: %v", err)
	}

	url, _ := freeURL(t)
	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	_, err = Wait(short, Options{URL: url}, "test", zerolog.Nop())
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, nats.ErrNoServers) || Refused(err) {
		t.Errorf("no server: %v", err)
	}
}
