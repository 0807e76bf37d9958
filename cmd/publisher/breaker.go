package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

type breakerCmd struct {
	Open   breakerOpenCmd   `cmd:"" help:"Force a provider's breaker open on every worker: its calls fail at once with circuit_open (an exchange's maintenance window, say)."`
	Close  breakerCloseCmd  `cmd:"" help:"Lift a forced open and reset every worker's breaker for the provider to closed."`
	Status breakerStatusCmd `cmd:"" help:"Show the operators' orders and, in cluster scope, the state the workers share."`
}

type breakerOpenCmd struct {
	Provider string        `arg:"" help:"Provider: a node's provider field, or its URL host or subject with other characters than A-Z a-z 0-9 _ - made _ (api.binance.com is api_binance_com)."`
	Reason   string        `required:"" help:"Why; shown in the errors of the refused nodes and kept in KV."`
	For      time.Duration `help:"Close by itself after this long, e.g. 2h (default: until breaker close)."`
	By       string        `help:"Who issues the order (default: user@host)."`
}

func (c *breakerOpenCmd) Run(e *env) error {
	o := &contract.BreakerOverride{Provider: c.Provider, Action: contract.BreakerActionOpen, Reason: c.Reason, IssuedBy: issuer(c.By), IssuedAt: time.Now().UTC()}
	if c.For < 0 {
		return &exitError{code: exitFailed, msg: "--for must be a positive duration such as 2h"}
	}
	if c.For > 0 {
		until := o.IssuedAt.Add(c.For)
		o.Until = &until
	}
	if err := e.client.OrderBreaker(e.ctx, o); err != nil {
		return err
	}
	msg := "until: publisher breaker close " + c.Provider
	if o.Until != nil {
		msg = "until " + o.Until.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(e.out, "breaker of %s forced open on every worker, %s\n", c.Provider, msg)
	return nil
}

type breakerCloseCmd struct {
	Provider string `arg:"" help:"Provider."`
	Reason   string `help:"Why; kept in KV."`
	By       string `help:"Who issues the order (default: user@host)."`
}

func (c *breakerCloseCmd) Run(e *env) error {
	o := &contract.BreakerOverride{Provider: c.Provider, Action: contract.BreakerActionClose, Reason: c.Reason, IssuedBy: issuer(c.By), IssuedAt: time.Now().UTC()}
	if err := e.client.OrderBreaker(e.ctx, o); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "breaker of %s closed on every worker; it opens again if calls keep failing\n", c.Provider)
	return nil
}

type breakerStatusCmd struct {
	Provider string `arg:"" optional:"" help:"Provider (default: every provider on record)."`
	JSON     bool   `help:"Print JSON."`
}

func (c *breakerStatusCmd) Run(e *env) error {
	all, err := e.client.Breakers(e.ctx, c.Provider)
	if err != nil {
		return err
	}
	if c.JSON {
		data, _ := json.MarshalIndent(all, "", "  ")
		fmt.Fprintln(e.out, string(data))
		return nil
	}
	if len(all) == 0 {
		what := "no provider has"
		if c.Provider != "" {
			what = c.Provider + " has"
		}
		fmt.Fprintf(e.out, "%s no operator order, no shared state and no rate-limit pause: breakers run on their own.\n", what)
	}
	now := time.Now()
	for _, st := range all {
		fmt.Fprintf(e.out, "provider      %s\n", st.Provider)
		if o := st.Override; o != nil {
			state := "closed (breakers reset)"
			if o.Action == contract.BreakerActionOpen {
				state = "forced OPEN"
				if o.Until != nil {
					state += " until " + o.Until.Local().Format(time.RFC3339)
					if now.After(*o.Until) {
						state += " (lapsed)"
					}
				}
			}
			fmt.Fprintf(e.out, "operator      %s by %s at %s: %s\n", state, o.IssuedBy, o.IssuedAt.Local().Format(time.RFC3339), o.Reason)
		}
		if s := st.Shared; s != nil {
			line := fmt.Sprintf("%s on worker %s at %s", s.State, s.WorkerID, s.Time.Local().Format(time.RFC3339))
			if s.OpenUntil != nil {
				line += ", calls resume at " + s.OpenUntil.Local().Format(time.RFC3339)
			}
			if s.Reason != "" {
				line += ": " + s.Reason
			}
			fmt.Fprintf(e.out, "cluster       %s\n", line)
		}
		if p := st.Pause; p != nil {
			state := "PAUSED until " + p.Until.Local().Format(time.RFC3339Nano)
			if now.After(p.Until) {
				state = "paused until " + p.Until.Local().Format(time.RFC3339Nano) + " (lapsed)"
			}
			fmt.Fprintf(e.out, "rate limit    %s, asked by the provider of worker %s: %s\n", state, p.WorkerID, p.Reason)
		}
	}
	fmt.Fprintf(e.out, "(every change of a worker's breaker is published on %s: nats sub '%s')\n",
		e.client.Subjects().Breakers("<provider>"), e.client.Subjects().BreakersAll())
	return nil
}

// issuer is who issues an order: by, else user@host.
func issuer(by string) string {
	if by != "" {
		return by
	}
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
