package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/schedule"
)

type scheduleCmd struct {
	Add    scheduleAddCmd    `cmd:"" help:"Add a schedule: JetStream publishes an execution request at each due time, no scheduler process needed."`
	Ls     scheduleLsCmd     `cmd:"" help:"List the schedules."`
	Rm     scheduleRmCmd     `cmd:"" help:"Remove a schedule."`
	Pause  schedulePauseCmd  `cmd:"" help:"Pause a schedule: no firing until resume; missed firings are not made up."`
	Resume scheduleResumeCmd `cmd:"" help:"Resume a paused schedule."`
}

type scheduleAddCmd struct {
	Name     string        `arg:"" help:"Schedule name (1 to 40 of A-Z a-z 0-9 _ -); each firing's request id is NAME-<time it fired>."`
	Workflow string        `required:"" help:"Workflow id to run."`
	Bot      string        `help:"Bot id."`
	Strategy string        `help:"Strategy id."`
	Input    []string      `short:"i" help:"Input key=value, repeatable; the value is read as JSON when it parses." sep:"none"`
	Every    time.Duration `help:"Fire every interval, whole seconds, at least 1s (e.g. 1m)."`
	Cron     string        `help:"Fire on a cron expression: 5 fields (minute hour day month weekday, e.g. \"0 8 * * *\"), 6 (seconds first), or @hourly, @daily..."`
	TZ       string        `help:"Time zone of --cron, an IANA name (e.g. Europe/London); default UTC."`
	At       time.Time     `help:"Fire once at this RFC 3339 time."`
	Replace  bool          `help:"Replace a schedule of the same name."`
}

func (c *scheduleAddCmd) Run(e *env) error {
	inputs := map[string]any{}
	for _, kv := range c.Input {
		k, v, err := client.ParseInput(kv)
		if err != nil {
			return err
		}
		inputs[k] = v
	}
	if len(inputs) == 0 {
		inputs = nil
	}
	spec := schedule.Spec{Name: c.Name, Every: c.Every, Cron: c.Cron, TimeZone: c.TZ, At: c.At,
		Request: contract.Request{WorkflowID: c.Workflow, BotID: c.Bot, StrategyID: c.Strategy, Inputs: inputs}}
	if err := e.client.Schedules().Add(e.ctx, spec, c.Replace); err != nil {
		return err
	}
	sc, err := e.client.Schedules().Get(e.ctx, c.Name)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "schedule %s stored: %s runs workflow %s; watch its runs with: publisher events --workflow %s\n", sc.Name, when(sc), sc.WorkflowID, sc.WorkflowID)
	return nil
}

type scheduleLsCmd struct {
	JSON bool `help:"Print JSON."`
}

func (c *scheduleLsCmd) Run(e *env) error {
	all, err := e.client.Schedules().List(e.ctx)
	if err != nil {
		return err
	}
	printSchedules(e, all, c.JSON)
	return nil
}

// printSchedules prints schedules as a table, or JSON.
func printSchedules(e *env, all []schedule.Schedule, asJSON bool) {
	if asJSON {
		data, _ := json.MarshalIndent(all, "", "  ")
		fmt.Fprintln(e.out, string(data))
		return
	}
	if len(all) == 0 {
		fmt.Fprintln(e.out, "no schedule; add one with: publisher schedule add NAME --workflow W --every 1m")
		return
	}
	for _, sc := range all {
		state := "active"
		if sc.Paused {
			state = "PAUSED"
			if sc.PausedBy != "" {
				state += " by " + sc.PausedBy
			}
		}
		bot := sc.BotID
		if bot == "" {
			bot = "-"
		}
		fmt.Fprintf(e.out, "%-24s %-8s workflow %-20s bot %-12s %s (since %s)\n", sc.Name, state, sc.WorkflowID, bot, when(&sc), sc.Updated.Local().Format(time.RFC3339))
	}
}

// when says when a schedule fires.
func when(sc *schedule.Schedule) string {
	if sc.TimeZone != "" {
		return sc.Schedule + " (" + sc.TimeZone + ")"
	}
	return sc.Schedule
}

type scheduleRmCmd struct {
	Name string `arg:"" help:"Schedule name."`
}

func (c *scheduleRmCmd) Run(e *env) error {
	if err := e.client.Schedules().Remove(e.ctx, c.Name); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "schedule %s removed\n", c.Name)
	return nil
}

type schedulePauseCmd struct {
	Name string `arg:"" help:"Schedule name."`
	By   string `help:"Who pauses it (default: user@host)."`
}

func (c *schedulePauseCmd) Run(e *env) error {
	if err := e.client.Schedules().Pause(e.ctx, c.Name, issuer(c.By)); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "schedule %s paused; resume it with: publisher schedule resume %s\n", c.Name, c.Name)
	return nil
}

type scheduleResumeCmd struct {
	Name string `arg:"" help:"Schedule name."`
}

func (c *scheduleResumeCmd) Run(e *env) error {
	if err := e.client.Schedules().Resume(e.ctx, c.Name); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "schedule %s resumed\n", c.Name)
	return nil
}
