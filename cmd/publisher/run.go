package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/kvstate"
)

type runCmd struct {
	Workflow      string        `arg:"" help:"Workflow id."`
	File          string        `help:"Request JSON file to start from (e.g. examples/workflows/NAME.request.json); flags override its fields." type:"existingfile"`
	Bot           string        `help:"Bot id."`
	Strategy      string        `help:"Strategy id."`
	Input         []string      `short:"i" help:"Input key=value, repeatable; the value is read as JSON when it parses (qty=0.5 is a number)." sep:"none"`
	RequestID     string        `help:"Request id, the dedupe key and execution id (default: random)."`
	CorrelationID string        `help:"Correlation id (default: made by the worker)."`
	NotAfter      time.Duration `help:"Reject the request if no worker starts it within this time, e.g. 5s."`
	Inline        string        `help:"Send this workflow definition file inline instead of using the deployed one." type:"existingfile"`
	Wait          bool          `help:"Follow the execution's events until it ends; the exit code tells how it ended (0 completed, 1 failed, 2 halted, 3 rejected, 4 timed out; 5 a duplicate request id)."`
	Timeout       time.Duration `help:"With --wait, how long to wait." default:"10m"`
	JSON          bool          `help:"Print events as JSON lines."`
}

func (c *runCmd) Run(e *env) error {
	req, err := c.request()
	if err != nil {
		return err
	}
	sent, err := e.client.Send(e.ctx, req)
	if err != nil {
		return err
	}
	execID := sent.ExecutionID
	if sent.Duplicate {
		return duplicate(e, req.WorkflowID, execID)
	}
	if !c.Wait {
		fmt.Fprintf(e.out, "published request %s for workflow %s; follow it with: publisher events --execution %s --replay\n", execID, req.WorkflowID, execID)
		return nil
	}
	ctx, cancel := context.WithTimeout(e.ctx, c.Timeout)
	defer cancel()
	var last *contract.Event
	bot := cmp.Or(req.BotID, contract.NoBot) // a bot may read only its own events
	err = e.client.Follow(ctx, client.Filter{BotID: bot, WorkflowID: req.WorkflowID, ExecutionID: execID}, true, func(ev *contract.Event) bool {
		printEvent(e.out, ev, c.JSON)
		if contract.IsTerminalEvent(ev.Type) {
			last = ev
			return true
		}
		return false
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return &exitError{code: exitTimeout, msg: fmt.Sprintf("execution %s did not finish within %s; is a worker running? check with: publisher status %s", execID, c.Timeout, execID)}
	}
	if err != nil {
		return err
	}
	return exitFor(last)
}

// duplicate reports a request id already published for the workflow: the stream
// did not store it again, and it will not run again.
func duplicate(e *env, workflowID, execID string) error {
	state := "not started yet"
	st, err := e.client.Status(e.ctx, workflowID, execID)
	switch {
	case err == nil:
		state = st.Status
		if st.Error != nil {
			state += " (" + st.Error.Kind + ": " + st.Error.Message + ")"
		}
	case !errors.Is(err, kvstate.ErrNotFound):
		return err
	}
	return &exitError{code: exitDuplicate, msg: fmt.Sprintf("request %s was already published for workflow %s and is not run again; its execution is %s (see: publisher status %s); publish with another --request-id to run it again",
		execID, workflowID, state, execID)}
}

// exitFor maps a terminal event to the exit code and message of run --wait.
func exitFor(ev *contract.Event) error {
	why := ""
	if ev.Error != nil {
		why = ev.Error.Kind + ": " + ev.Error.Message
	}
	switch ev.Type {
	case contract.ExecutionCompleted:
		return nil
	case contract.ExecutionHalted:
		return &exitError{code: exitHalted, msg: "execution halted: " + why}
	case contract.ExecutionRejected:
		return &exitError{code: exitRejected, msg: "request rejected: " + why}
	}
	return &exitError{code: exitFailed, msg: "execution failed: " + why}
}

// request builds the request from the file, then the flags.
func (c *runCmd) request() (*contract.Request, error) {
	req := &contract.Request{}
	if c.File != "" {
		data, err := os.ReadFile(c.File)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, req); err != nil {
			return nil, fmt.Errorf("%s: %w", c.File, err)
		}
	}
	if req.WorkflowID != "" && req.WorkflowID != c.Workflow {
		return nil, fmt.Errorf("%s names workflow %s, not %s", c.File, req.WorkflowID, c.Workflow)
	}
	req.WorkflowID = c.Workflow
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&req.BotID, c.Bot)
	set(&req.StrategyID, c.Strategy)
	set(&req.RequestID, c.RequestID)
	set(&req.CorrelationID, c.CorrelationID)
	if req.Inputs == nil {
		req.Inputs = map[string]any{}
	}
	for _, kv := range c.Input {
		k, v, err := client.ParseInput(kv)
		if err != nil {
			return nil, err
		}
		req.Inputs[k] = v
	}
	if c.NotAfter > 0 {
		t := time.Now().Add(c.NotAfter).UTC()
		req.NotAfter = &t
	}
	if c.Inline != "" {
		data, err := os.ReadFile(c.Inline)
		if err != nil {
			return nil, err
		}
		req.Workflow = data
	}
	return req, nil
}
