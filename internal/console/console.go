// Package console is flowguard's operations console: a web page, live over
// Server-Sent Events, that shows executions, the fleet, providers' breakers, risk,
// the emergency state and dead letters, and lets an operator act on them. It reads
// and writes only what the public contract names (streams, KV buckets, the workers'
// micro service), so it works against any deployment.
package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/client"
)

// Config configures the console.
type Config struct {
	Listen        string        `help:"Address the web page is served on; loopback by default, so only this machine sees it." default:"127.0.0.1:8080" env:"FLOWGUARD_CONSOLE_LISTEN"`
	Token         string        `help:"Token that allows actions (halt, breaker orders, re-publishing); without it or basic auth the console is read-only." env:"FLOWGUARD_CONSOLE_TOKEN"`
	BasicUser     string        `help:"User that allows actions, with --basic-password." env:"FLOWGUARD_CONSOLE_BASIC_USER"`
	BasicPassword string        `help:"Password of --basic-user." env:"FLOWGUARD_CONSOLE_BASIC_PASSWORD"`
	Window        time.Duration `help:"How far back the executions list starts reading events." default:"1h" env:"FLOWGUARD_CONSOLE_WINDOW"`
	MaxExecutions int           `help:"Executions kept in memory for the list; the oldest seen are forgotten first (an execution's page still reads its events)." default:"10000" env:"FLOWGUARD_CONSOLE_MAX_EXECUTIONS"`
	FleetInterval time.Duration `help:"How often the workers are asked for their status (NATS micro discovery)." default:"2s" env:"FLOWGUARD_CONSOLE_FLEET_INTERVAL"`
}

// Defaults of Config.
const (
	DefaultListen        = "127.0.0.1:8080"
	DefaultWindow        = time.Hour
	DefaultMaxExecutions = 10000
	DefaultFleetInterval = 2 * time.Second
)

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxExecutions == 0 {
		c.MaxExecutions = DefaultMaxExecutions
	}
	if c.FleetInterval == 0 {
		c.FleetInterval = DefaultFleetInterval
	}
	switch {
	case (c.BasicUser == "") != (c.BasicPassword == ""):
		return errors.New("--basic-user and --basic-password go together")
	case c.Token != "" && c.BasicUser != "":
		return errors.New("give --token or --basic-user and --basic-password, not both")
	case c.Token != "" && len(c.Token) < 16:
		return errors.New("--token must be at least 16 characters; make one with: head -c 24 /dev/urandom | base64")
	case c.Window < 0, c.MaxExecutions < 0, c.FleetInterval < 0:
		return errors.New("--window, --max-executions and --fleet-interval must not be negative")
	}
	return nil
}

// Server is the console: it follows the deployment and serves the page.
type Server struct {
	cfg    Config
	nc     *nats.Conn
	client *client.Client
	idx    *index
	hub    *hub
	feeds  *feeds
	auth   *auth
	views  *views
	refuse refusals
	log    zerolog.Logger
}

// New returns a console over nc, for the deployment of subject prefix.
func New(nc *nats.Conn, prefix string, cfg Config, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := client.New(nc, prefix)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	views, err := newViews()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, nc: nc, client: cl, idx: newIndex(cfg.MaxExecutions), hub: newHub(), auth: newAuth(cfg), views: views, log: log}
	s.feeds = newFeeds(nc, js, cl.Subjects(), s.idx, s.hub, cfg, log)
	s.refuse.watch(nc)
	s.watchConnection(nc)
	return s, nil
}

// watchConnection makes every page reload when the NATS connection drops or comes
// back, so that none shows stale figures as live. It keeps nc's handlers.
func (s *Server) watchConnection(nc *nats.Conn) {
	down, up := nc.Opts.DisconnectedErrCB, nc.Opts.ReconnectedCB
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		s.hub.touchAll()
		if down != nil {
			down(c, err)
		}
	})
	nc.SetReconnectHandler(func(c *nats.Conn) {
		s.hub.touchAll()
		if up != nil {
			up(c)
		}
	})
}

// hubInterval is how often changes are pushed to the pages.
const hubInterval = 200 * time.Millisecond

// Run serves the console on ln until ctx ends, then shuts down.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { s.feeds.run(ctx); done <- struct{}{} }()
	go func() { s.hub.run(ctx, hubInterval); done <- struct{}{} }()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel() // ends the live streams, so that Shutdown does not wait for them
	shutdown, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shutdown)
	<-done
	<-done
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve the console on %s: %w", ln.Addr(), err)
	}
	return nil
}

// ListenAndRun listens on the configured address and runs until ctx ends.
func (s *Server) ListenAndRun(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w; pick a free address with --listen", s.cfg.Listen, err)
	}
	if host, _, _ := net.SplitHostPort(s.cfg.Listen); !isLoopback(host) && !s.auth.enabled() {
		s.log.Warn().Str("listen", s.cfg.Listen).Msg("the console is reachable beyond this machine; anyone who reaches it sees the fleet (actions stay disabled without --token)")
	}
	s.log.Info().Str("url", "http://"+ln.Addr().String()).Bool("actions", s.auth.enabled()).Msg("console serving")
	return s.Run(ctx, ln)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
