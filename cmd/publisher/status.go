package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flowguard/flowguard/internal/kvstate"
)

type statusCmd struct {
	Execution string `arg:"" optional:"" help:"Execution id (the request id); with neither it nor --workflow, list the schedules."`
	Workflow  string `help:"Workflow id: with no execution id, show its latest execution; with one, skip the lookup."`
	JSON      bool   `help:"Print the status and result documents as JSON."`
}

func (c *statusCmd) Run(e *env) error {
	if c.Execution == "" && c.Workflow == "" {
		// The deployment's overview: its schedules.
		all, err := e.client.Schedules().List(e.ctx)
		if err != nil {
			return err
		}
		if !c.JSON {
			fmt.Fprintln(e.out, "schedules (an execution's status: publisher status EXECUTION_ID, or --workflow W for its latest)")
		}
		printSchedules(e, all, c.JSON)
		return nil
	}
	execID := c.Execution
	if execID == "" {
		latest, err := e.client.Latest(e.ctx, c.Workflow)
		if errors.Is(err, kvstate.ErrNotFound) {
			return &exitError{code: exitFailed, msg: fmt.Sprintf("workflow %s has no execution on record (executions expire after the state TTL)", c.Workflow)}
		}
		if err != nil {
			return err
		}
		execID = latest
	}
	st, err := e.client.Status(e.ctx, c.Workflow, execID)
	if errors.Is(err, kvstate.ErrNotFound) {
		return &exitError{code: exitFailed, msg: fmt.Sprintf("no execution %s on record: it has not started yet, or its state expired", execID)}
	}
	if err != nil {
		return err
	}
	res, err := e.client.Result(e.ctx, st.WorkflowID, execID)
	if err != nil && !errors.Is(err, kvstate.ErrNotFound) {
		return err
	}
	if c.JSON {
		out := map[string]any{"status": st}
		if res != nil {
			out["result"] = res
		}
		data, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(e.out, string(data))
		return nil
	}
	fmt.Fprintf(e.out, "execution     %s\nworkflow      %s (version %d)\nstatus        %s\n", st.ExecutionID, st.WorkflowID, st.WorkflowVersion, st.Status)
	fmt.Fprintf(e.out, "bot           %s\nstrategy      %s\ncorrelation   %s\nattempt       %d on %s\n", st.BotID, st.StrategyID, st.CorrelationID, st.Attempt, st.WorkerID)
	if st.StartedAt != nil {
		fmt.Fprintf(e.out, "started       %s\n", st.StartedAt.Local().Format(time.RFC3339Nano))
	}
	if st.FinishedAt != nil {
		fmt.Fprintf(e.out, "finished      %s\n", st.FinishedAt.Local().Format(time.RFC3339Nano))
	}
	if st.Error != nil {
		fmt.Fprintf(e.out, "error         %s: %s\n", st.Error.Kind, st.Error.Message)
	}
	if res != nil && len(res.Outputs) > 0 {
		data, _ := json.MarshalIndent(res.Outputs, "              ", "  ")
		fmt.Fprintf(e.out, "outputs       %s\n", data)
	}
	return nil
}
