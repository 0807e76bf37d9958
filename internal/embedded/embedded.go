// Package embedded runs a nats-server with JetStream inside the process: the
// worker's default when no NATS URL is given, and the server of integration tests.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options of an embedded server.
type Options struct {
	Host string
	// Port to listen on; -1 picks a free one.
	Port int
	// StoreDir holds JetStream's data; it survives restarts.
	StoreDir string
	// SyncAlways fsyncs every write before acknowledging it. Slower, but an
	// acknowledged write survives a power loss or an OS crash; by default the
	// server fsyncs every 2 minutes.
	SyncAlways bool
	// MaxPayload of a message in bytes; 0 keeps the server default (1 MiB).
	MaxPayload int32
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded server: a store directory is required")
	}
	if o.Port > 0 { // fail fast with a clear message when the port is taken
		l, err := net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
		if err != nil {
			return nil, fmt.Errorf("embedded server cannot listen on %s:%d: %w; stop what uses the port or choose another with --listen", o.Host, o.Port, err)
		}
		l.Close()
	}
	opts := &server.Options{
		ServerName: "flowguard-embedded",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		MaxPayload: o.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded server did not become ready on %s:%d within 15s; check that the store directory %s is writable", o.Host, o.Port, o.StoreDir)
	}
	return s, nil
}
