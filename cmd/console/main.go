// Command console serves flowguard's operations console, a live web page over a
// deployment: executions, fleet, providers, risk, emergency, dead letters and
// plots. See docs/console.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/console"
	"github.com/flowguard/flowguard/internal/logging"
	"github.com/flowguard/flowguard/internal/natsconn"
)

type cli struct {
	NATS    natsconn.Options `embed:""`
	Prefix  string           `help:"Subject prefix." default:"flow" env:"FLOWGUARD_PREFIX"`
	Console console.Config   `embed:""`
	Log     logging.Options  `embed:""`
}

func main() {
	var c cli
	kong.Parse(&c,
		kong.Name("console"),
		kong.Description("Serve flowguard's operations console: a live web page over a deployment."),
		kong.UsageOnError(),
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &c); err != nil {
		fmt.Fprintln(os.Stderr, "console:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c *cli) error {
	log, err := logging.New(c.Log, os.Stderr)
	if err != nil {
		return err
	}
	if c.NATS.URL == "" {
		c.NATS.URL = nats.DefaultURL
	}
	if err := c.Console.Validate(); err != nil {
		return err
	}
	nc, err := natsconn.Connect(c.NATS, "flowguard-console", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	srv, err := console.New(nc, c.Prefix, c.Console, log)
	if err != nil {
		return err
	}
	if err := srv.ListenAndRun(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
