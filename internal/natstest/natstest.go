// Package natstest starts real nats-server instances with JetStream for tests, in
// the test process, on random ports, and polls for conditions with a deadline.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/embedded"
)

// Server is an embedded JetStream server owned by a test.
type Server struct {
	*server.Server
	dir  string
	port int
}

// Start starts a server on a random port with its store in a temporary directory;
// it is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), port: -1}
	s.start(t)
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	srv, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: s.port, StoreDir: s.dir})
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	s.Server = srv
	s.port = srv.Addr().(*net.TCPAddr).Port
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.ClientURL() }

// Restart stops the server and starts it again on the same port with the same store.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	s.start(t)
}

// Connect returns a client connection that reconnects forever; it is closed when
// the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a new connection.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// WaitFor polls check every step until it returns nil, and fails the test with
// the last error when total has passed.
func WaitFor(t testing.TB, total time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	step := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", total, err)
		}
		time.Sleep(step)
		if step < 200*time.Millisecond {
			step *= 2
		}
	}
}
