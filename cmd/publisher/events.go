package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
)

type eventsCmd struct {
	Bot       string `help:"Only this bot's events (needed with a bot's credentials: a bot reads only its own)."`
	Workflow  string `help:"Only this workflow's events."`
	Execution string `help:"Only this execution's events."`
	Replay    bool   `help:"Start from the oldest stored event instead of new ones."`
	JSON      bool   `help:"Print events as JSON lines."`
}

func (c *eventsCmd) Run(e *env) error {
	f := client.Filter{BotID: c.Bot, WorkflowID: c.Workflow, ExecutionID: c.Execution}
	err := e.client.Follow(e.ctx, f, c.Replay, func(ev *contract.Event) bool {
		printEvent(e.out, ev, c.JSON)
		return false
	})
	cause := context.Cause(e.ctx)
	switch {
	case errors.Is(cause, nats.ErrPermissionViolation) && c.Bot == "":
		return &exitError{code: exitRefused, msg: fmt.Sprintf("%v: a bot may read only its own events; add --bot <its bot id>", cause)}
	case cause != nil:
		return cause // interrupted by the user, or refused
	}
	return err
}

// printEvent writes one event, as JSON or as a readable line.
func printEvent(w io.Writer, ev *contract.Event, asJSON bool) {
	if asJSON {
		data, _ := json.Marshal(ev)
		fmt.Fprintln(w, string(data))
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-19s %s/%s #%d", ev.Time.Local().Format("15:04:05.000"), ev.Type, ev.WorkflowID, ev.ExecutionID, ev.Seq)
	if ev.NodeID != "" {
		fmt.Fprintf(&b, "  node=%s", ev.NodeID)
		if ev.NodeType != "" {
			fmt.Fprintf(&b, " (%s)", ev.NodeType)
		}
	}
	if ev.Attempt > 1 {
		fmt.Fprintf(&b, " attempt=%d", ev.Attempt)
	}
	if ev.DurationMS != nil {
		fmt.Fprintf(&b, " %dms", *ev.DurationMS)
	}
	if ev.DelayMS != nil {
		fmt.Fprintf(&b, " retry in %dms", *ev.DelayMS)
	}
	if ev.Type == contract.ExecutionStarted {
		fmt.Fprintf(&b, "  bot=%s correlation_id=%s", ev.BotID, ev.CorrelationID)
		if ev.Resumed {
			fmt.Fprintf(&b, " resumed, restored %v", ev.RestoredNodes)
		}
	}
	if ev.Error != nil {
		fmt.Fprintf(&b, "  error %s: %s", ev.Error.Kind, ev.Error.Message)
	} else if ev.Reason != "" {
		fmt.Fprintf(&b, "  (%s)", ev.Reason)
	}
	if len(ev.Outputs) > 0 {
		fmt.Fprintf(&b, "  %s", compactJSON(ev.Outputs))
	}
	fmt.Fprintln(w, b.String())
}

// compactJSON renders outputs on one line with sorted keys.
func compactJSON(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v, _ := json.Marshal(m[k])
		parts = append(parts, k+"="+string(v))
	}
	return strings.Join(parts, " ")
}
