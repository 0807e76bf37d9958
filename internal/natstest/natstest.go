// Package natstest starts real nats-server instances with JetStream for tests, in
// the test process, on random ports, and polls for conditions with a deadline.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded JetStream server owned by a test.
type Server struct {
	*server.Server
	opts server.Options
}

// Start starts a server on a random port with its store in a temporary directory;
// it is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, &server.Options{})
}

// StartWith is Start with more server options: credentials, TLS, sync_interval
// always. Unset, the host is 127.0.0.1, the port random and the store a temporary
// directory; JetStream is on.
func StartWith(t testing.TB, opts *server.Options) *Server {
	t.Helper()
	s := &Server{opts: *opts}
	if s.opts.ServerName == "" {
		s.opts.ServerName = "flowguard-test" // the same across restarts
	}
	if s.opts.Host == "" {
		s.opts.Host = "127.0.0.1"
	}
	if s.opts.Port == 0 {
		s.opts.Port = -1
	}
	if s.opts.StoreDir == "" {
		s.opts.StoreDir = t.TempDir()
	}
	s.opts.JetStream, s.opts.NoSigs = true, true
	s.opts.NoLog = true
	s.start(t)
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	opts := s.opts // the server keeps and changes its options
	srv, err := server.NewServer(&opts)
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats-server not ready for connections within 15s")
	}
	s.Server = srv
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
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

// StartCluster starts n servers with JetStream clustered together, in the test
// process; they are shut down when the test ends. It returns their client URLs
// once the cluster has a JetStream meta leader.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	servers := make([]*server.Server, n)
	urls := make([]string, n)
	for i := range servers {
		opts := &server.Options{
			ServerName: fmt.Sprintf("flowguard-test-%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true, Routes: routes,
			Cluster: server.ClusterOpts{Name: "flowguard-test", Host: "127.0.0.1", Port: ports[i]},
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("start nats-server %d: %v", i, err)
		}
		go srv.Start()
		t.Cleanup(srv.Shutdown)
		if !srv.ReadyForConnections(15 * time.Second) {
			t.Fatalf("nats-server %d not ready for connections within 15s", i)
		}
		servers[i], urls[i] = srv, srv.ClientURL()
	}
	WaitFor(t, 30*time.Second, func() error {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return nil
			}
		}
		return errors.New("no JetStream meta leader yet")
	})
	return urls
}
