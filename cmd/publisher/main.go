// Command publisher is the users' command line for flowguard: deploy workflows, run
// them, follow their events and read their state. See docs/publisher.md.
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

// Exit codes of the publisher, listed in its help (exitCodes) and in docs/contract.md.
const (
	exitOK          = 0
	exitFailed      = 1 // the execution failed, or the command did
	exitHalted      = 2
	exitRejected    = 3
	exitTimeout     = 4
	exitDuplicate   = 5
	exitConnection  = 6
	exitRefused     = 7
	exitUnconfirmed = 8   // halt, pause or resume stored, but not in force on every worker in time
	exitSignal      = 128 // plus the signal's number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM
)

const exitCodes = `Exit codes: 0 done (run --wait: completed); 1 the execution failed, or the command did;
2 halted; 3 rejected; 4 run --wait timed out; 5 the request id was already published for
this workflow (a duplicate: not run again); 6 cannot connect to NATS; 7 NATS refused the
credentials or a permission; 8 halt, pause or resume stored but not in force on every
running worker within --confirm; 80 wrong usage (flags, arguments); 130 interrupted (Ctrl-C),
143 terminated (SIGTERM).`

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
		kong.Description("Drive flowguard: deploy workflows, run them, watch events, read state.\n\n"+exitCodes),
		kong.UsageOnError(),
	)
	os.Exit(run(k, &c))
}

func run(k *kong.Context, c *cli) int {
	ctx, interrupted := withSignals(context.Background())
	defer interrupted(nil)
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
		if natsconn.Refused(err) {
			return exitRefused
		}
		return exitConnection
	}
	defer nc.Close()
	cl, err := client.New(nc, c.Prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		return exitFailed
	}
	err = k.Run(&env{ctx: ctx, client: cl, out: os.Stdout})
	var ee *exitError
	var sig signalError
	switch {
	case errors.As(context.Cause(ctx), &sig):
		fmt.Fprintln(os.Stderr, "publisher:", sig)
		return exitSignal + int(sig.Signal)
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "publisher:", ee.msg)
		}
		return ee.code
	case errors.Is(context.Cause(ctx), nats.ErrPermissionViolation):
		fmt.Fprintf(os.Stderr, "publisher: %v: this NATS user may not do that; use the credentials of a role that may (docs/clusters.md, Roles)\n", context.Cause(ctx))
		return exitRefused
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrDisconnected):
		fmt.Fprintln(os.Stderr, "publisher: lost the connection to NATS:", err)
		return exitConnection
	default:
		fmt.Fprintln(os.Stderr, "publisher:", err)
		return exitFailed
	}
}

// signalError is the cancellation cause of a command stopped by a signal.
type signalError struct{ syscall.Signal }

func (s signalError) Error() string {
	if s.Signal == syscall.SIGINT {
		return "interrupted"
	}
	return "stopped by " + s.Signal.String()
}

// withSignals returns a context cancelled, with a signalError cause, on SIGINT or
// SIGTERM.
func withSignals(parent context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer signal.Stop(sigs)
		select {
		case s := <-sigs:
			cancel(signalError{s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
