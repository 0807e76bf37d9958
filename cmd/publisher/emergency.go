package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/provision"
)

// commandFlags are the flags of halt, pause and resume.
type commandFlags struct {
	Scope    string        `help:"Scope: global, bot.<id>, strategy.<id> or workflow.<id>." default:"global"`
	Reason   string        `help:"Why; kept in the audit trail and shown on every halted execution." required:""`
	IssuedBy string        `help:"Who issues the command (default: user@host)."`
	Confirm  time.Duration `help:"Then wait up to this long until every running worker has the scope's new state in force, and say which have; exit 8 if one has not (0: do not wait)." default:"5s"`
}

func (f *commandFlags) send(e *env, action string) error {
	by := f.IssuedBy
	if by == "" {
		by = whoAmI()
	}
	seq, err := e.client.Emergency(e.ctx, f.Scope, contract.EmergencyCommand{Action: action, Reason: f.Reason, IssuedBy: by})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%s %s stored (FLOW_EMERGENCY seq %d)\n", action, f.Scope, seq)
	if f.Confirm <= 0 {
		return nil
	}
	return confirm(e, action, f.Scope, f.Confirm)
}

// workerDiscovery bounds the wait for the first worker to answer the discovery:
// running workers answer within milliseconds.
const workerDiscovery = time.Second

// confirm waits until every running worker reports the scope's state as the
// stream now holds it (the command just stored, or a later one), and prints each
// worker as it does.
func confirm(e *env, action, scope string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(e.ctx, within)
	defer cancel()
	unconfirmed := func(err error) error {
		if errors.Is(err, context.DeadlineExceeded) {
			return &exitError{code: exitUnconfirmed, msg: fmt.Sprintf("%s %s is stored, but the workers could not be asked within %s (%v): check with publisher emergency status, or raise --confirm", action, scope, within, err)}
		}
		return err
	}
	board, err := e.client.Board(ctx)
	if err != nil {
		return unconfirmed(err)
	}
	want := board.Get(scope)
	subjects, err := e.client.Workers(ctx, min(within, workerDiscovery))
	if err != nil {
		return unconfirmed(err)
	}
	if len(subjects) == 0 {
		fmt.Fprintf(e.out, "no worker answered; a worker applies the stored commands before it takes its first request\n")
		return nil
	}
	pending := map[string]string{} // status endpoint subject -> why it is not confirmed yet
	for _, s := range subjects {
		pending[s] = "no answer yet"
	}
	for {
		for subject := range pending {
			st, err := e.client.WorkerStatus(ctx, subject)
			if err != nil {
				pending[subject] = err.Error()
				continue
			}
			got := st.Emergency.Get(scope)
			if got.Seq < want.Seq {
				pending[subject] = fmt.Sprintf("worker %s has %s %s from seq %d", st.WorkerID, scope, got.State, got.Seq)
				continue
			}
			applied := "" // a worker older than contract 4 does not say when
			if !got.AppliedAt.IsZero() {
				applied = " (applied " + got.AppliedAt.UTC().Format(time.RFC3339Nano) + ")"
			}
			fmt.Fprintf(e.out, "%s in force on worker %s%s\n", got.State, st.WorkerID, applied)
			delete(pending, subject)
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			var why []string
			for _, w := range pending {
				why = append(why, w)
			}
			sort.Strings(why)
			return &exitError{code: exitUnconfirmed, msg: fmt.Sprintf("%s %s is stored, but %d of %d workers have not applied it within %s (%s): check them (their logs, nats micro info %s); a worker that cannot follow the emergency stream starts nothing new once its --emergency-staleness has passed",
				action, scope, len(pending), len(subjects), within, strings.Join(why, "; "), contract.WorkerService)}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type haltCmd struct{ commandFlags }

func (c *haltCmd) Run(e *env) error { return c.send(e, emergency.ActionHalt) }

type pauseCmd struct{ commandFlags }

func (c *pauseCmd) Run(e *env) error { return c.send(e, emergency.ActionPause) }

type resumeCmd struct{ commandFlags }

func (c *resumeCmd) Run(e *env) error { return c.send(e, emergency.ActionResume) }

type emergencyCmd struct {
	Status  emergencyStatusCmd  `cmd:"" help:"Each scope's state: who set it, when, why."`
	History emergencyHistoryCmd `cmd:"" help:"Every emergency command, oldest first (the audit trail)."`
	Init    emergencyInitCmd    `cmd:"" help:"Recreate a deleted emergency stream, with a global halt in it."`
}

type emergencyInitCmd struct {
	Reason          string        `help:"Why; recorded with the global halt the stream starts with." required:""`
	IssuedBy        string        `help:"Who (default: user@host)."`
	Replicas        int           `help:"Replicas of the stream: the workers' --replicas." default:"1" env:"FLOWGUARD_REPLICAS"`
	DuplicateWindow time.Duration `help:"Duplicate window: the workers' --duplicate-window." default:"10m" env:"FLOWGUARD_DUPLICATE_WINDOW"`
}

func (c *emergencyInitCmd) Run(e *env) error {
	by := c.IssuedBy
	if by == "" {
		by = whoAmI()
	}
	cfg := provision.Config{Replicas: c.Replicas, DuplicateWindow: c.DuplicateWindow}
	if err := e.client.InitEmergency(e.ctx, cfg, by, c.Reason); err != nil {
		return err
	}
	fmt.Fprintln(e.out, "emergency stream recreated with a global halt; check what should run, then: publisher resume --reason ...")
	return nil
}

type emergencyStatusCmd struct{}

func (c *emergencyStatusCmd) Run(e *env) error {
	board, err := e.client.Board(e.ctx)
	if err != nil {
		return err
	}
	scopes := make([]string, 0, len(board))
	for s := range board {
		scopes = append(scopes, s)
	}
	sort.Strings(scopes)
	if _, ok := board[emergency.ScopeGlobal]; !ok {
		scopes = append([]string{emergency.ScopeGlobal}, scopes...)
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tSTATE\tSINCE\tBY\tREASON")
	for _, s := range scopes {
		st := board.Get(s)
		since := ""
		if !st.IssuedAt.IsZero() {
			since = st.IssuedAt.Local().Format(time.DateTime)
		}
		reason := st.Reason
		if st.Ignored != "" {
			reason += " [" + st.Ignored + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s, st.State, since, st.IssuedBy, reason)
	}
	return tw.Flush()
}

type emergencyHistoryCmd struct {
	Scope string `help:"Only this scope."`
}

func (c *emergencyHistoryCmd) Run(e *env) error {
	history, err := e.client.History(e.ctx, c.Scope)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTORED\tSCOPE\tACTION\tBY\tREASON")
	for _, h := range history {
		action := h.Action
		if h.Auto {
			action += " (auto)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", h.Seq, h.Stored.Local().Format(time.DateTime), h.Scope, action, h.IssuedBy, h.Reason)
	}
	return tw.Flush()
}

func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
