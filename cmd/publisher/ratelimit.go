package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

type ratelimitCmd struct {
	Set     ratelimitSetCmd     `cmd:"" help:"Set a provider's budgets for the whole fleet, live (flow_ratelimits budgets.<provider>)."`
	Ls      ratelimitLsCmd      `cmd:"" help:"List the budgets set live, the weight used in their current window, and providers' pauses."`
	Rm      ratelimitRmCmd      `cmd:"" help:"Remove a provider's live budgets: the workers' --rate-limits files apply again."`
	Unpause ratelimitUnpauseCmd `cmd:"" help:"Lift the pause a provider asked for with a 429 or 418, before it ends."`
}

type ratelimitSetCmd struct {
	Provider string   `arg:"" help:"Provider (the node's provider field, or its URL host or subject with other characters than A-Z a-z 0-9 _ - made _)."`
	Budget   []string `short:"b" help:"A budget NAME=LIMIT/WINDOW, e.g. weight=1200/1m, orders=50/10s; repeatable." sep:"none"`
	File     string   `help:"JSON file of the budgets ({\"budgets\": [...]}), instead of --budget." type:"existingfile"`
}

func (c *ratelimitSetCmd) Run(e *env) error {
	var rl contract.RateLimits
	switch {
	case c.File != "" && len(c.Budget) > 0:
		return &exitError{code: exitFailed, msg: "give --budget or --file, not both"}
	case c.File != "":
		data, err := os.ReadFile(c.File)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, &rl); err != nil {
			return fmt.Errorf("%s: %w; write {\"budgets\": [{\"name\": \"weight\", \"limit\": 1200, \"window\": \"1m\"}]}", c.File, err)
		}
	case len(c.Budget) == 0:
		return &exitError{code: exitFailed, msg: "give at least one --budget NAME=LIMIT/WINDOW (e.g. weight=1200/1m), or --file"}
	}
	for _, spec := range c.Budget {
		name, rest, ok1 := strings.Cut(spec, "=")
		limit, window, ok2 := strings.Cut(rest, "/")
		n, err := strconv.ParseInt(limit, 10, 64)
		if !ok1 || !ok2 || err != nil {
			return &exitError{code: exitFailed, msg: fmt.Sprintf("budget %q: write NAME=LIMIT/WINDOW, e.g. weight=1200/1m", spec)}
		}
		rl.Budgets = append(rl.Budgets, contract.Budget{Name: name, Limit: n, Window: window})
	}
	if err := e.client.SetRateLimits(e.ctx, c.Provider, rl); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "rate limits of %s set for every worker; see them with: publisher ratelimit ls\n", c.Provider)
	return nil
}

type ratelimitLsCmd struct {
	JSON bool `help:"Print JSON."`
}

func (c *ratelimitLsCmd) Run(e *env) error {
	all, err := e.client.RateLimits(e.ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		data, _ := json.MarshalIndent(all, "", "  ")
		fmt.Fprintln(e.out, string(data))
		return nil
	}
	if len(all) == 0 {
		fmt.Fprintln(e.out, "no budget set live and no pause; the workers' --rate-limits files apply")
	}
	now := time.Now()
	for _, pl := range all {
		fmt.Fprintf(e.out, "provider      %s\n", pl.Provider)
		for _, u := range pl.Budgets {
			fmt.Fprintf(e.out, "budget        %-12s %d/%d per %s used, window ends %s\n", u.Budget.Name, u.Used, u.Budget.Limit, u.Budget.Window, u.WindowEnd.Local().Format(time.RFC3339))
		}
		if p := pl.Pause; p != nil && now.Before(p.Until) {
			fmt.Fprintf(e.out, "paused        until %s, asked by the provider of worker %s: %s\n", p.Until.Local().Format(time.RFC3339Nano), p.WorkerID, p.Reason)
		}
	}
	return nil
}

type ratelimitRmCmd struct {
	Provider string `arg:"" help:"Provider."`
}

func (c *ratelimitRmCmd) Run(e *env) error {
	if err := e.client.RemoveRateLimits(e.ctx, c.Provider, false); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "live rate limits of %s removed; the workers' --rate-limits files apply again\n", c.Provider)
	return nil
}

type ratelimitUnpauseCmd struct {
	Provider string `arg:"" help:"Provider."`
}

func (c *ratelimitUnpauseCmd) Run(e *env) error {
	if err := e.client.RemoveRateLimits(e.ctx, c.Provider, true); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "pause of %s lifted: workers call it again\n", c.Provider)
	return nil
}
