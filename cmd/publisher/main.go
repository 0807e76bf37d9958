// Command publisher is the users' command line for flowguard: deploy workflows, run
// them, follow their events and read their state. See README.md.
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
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/natsconn"
)

// Exit codes of the publisher.
const (
	exitOK       = 0
	exitFailed   = 1 // the execution failed, or the command did
	exitHalted   = 2
	exitRejected = 3
	exitTimeout  = 4
)

type cli struct {
	NATS   natsconn.Options `embed:""`
	Prefix string           `help:"Subject prefix." default:"flow" env:"FLOWGUARD_PREFIX"`

	Deploy deployCmd `cmd:"" help:"Validate workflow definitions and store them in flow_workflows."`
	Run    runCmd    `cmd:"" help:"Publish an execution request; with --wait, follow it to the end."`
	Events eventsCmd `cmd:"" help:"Print lifecycle events as they happen."`
	Status statusCmd `cmd:"" help:"Print an execution's status and result from KV."`

	Halt      haltCmd      `cmd:"" help:"Halt a scope: running executions it covers stop at once, new ones are refused, no order goes out."`
	Pause     pauseCmd     `cmd:"" help:"Pause a scope: workflows run, only reduce-only orders go out."`
	Resume    resumeCmd    `cmd:"" help:"Resume a halted or paused scope."`
	Emergency emergencyCmd `cmd:"" help:"Emergency state and its audit trail."`
	Risk      riskCmd      `cmd:"" help:"Risk limits and metrics."`
	Orders    ordersCmd    `cmd:"" help:"Print order intents as they are placed."`
	Breaker   breakerCmd   `cmd:"" help:"Force a provider's circuit breaker open or closed on every worker, or show its state."`
	Schedule  scheduleCmd  `cmd:"" help:"Schedules: run a workflow every interval, on a cron or at a time, fired by JetStream itself."`
	Ratelimit ratelimitCmd `cmd:"" help:"Providers' rate limits shared by the fleet: budgets set live, their use, and pauses."`
}

// env is what every command gets.
type env struct {
	ctx    context.Context
	client *client.Client
	out    *os.File
}

// exitError carries an exit code and an optional message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	var c cli
	k := kong.Parse(&c,
		kong.Name("publisher"),
		kong.Description("Drive flowguard: deploy workflows, run them, watch events, read state."),
		kong.UsageOnError(),
	)
	os.Exit(run(k, &c))
}

func run(k *kong.Context, c *cli) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.NATS.URL == "" {
		c.NATS.URL = nats.DefaultURL
	}
	// The server answers a message this user may not send with an asynchronous
	// error, and the operation would only time out: end the command at once instead.
	ctx, refused := context.WithCancelCause(ctx)
	defer refused(nil)
	nc, err := natsconn.Connect(c.NATS, "flowguard-publisher", zerolog.Nop(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				refused(err)
			}
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		return exitFailed
	}
	defer nc.Close()
	cl, err := client.New(nc, c.Prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		return exitFailed
	}
	err = k.Run(&env{ctx: ctx, client: cl, out: os.Stdout})
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(context.Cause(ctx), nats.ErrPermissionViolation):
		fmt.Fprintf(os.Stderr, "publisher: %v: this NATS user may not do that; use the credentials of a role that may (README.md, Roles)\n", context.Cause(ctx))
		return exitFailed
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "publisher:", ee.msg)
		}
		return ee.code
	case errors.Is(err, context.Canceled):
		return exitFailed
	default:
		fmt.Fprintln(os.Stderr, "publisher:", err)
		return exitFailed
	}
}
