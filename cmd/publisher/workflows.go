package main

import (
	"fmt"
	"os"
)

type deployCmd struct {
	Files  []string `arg:"" help:"Workflow definition files (JSON)." type:"existingfile"`
	DryRun bool     `help:"Only validate; store nothing."`
}

func (c *deployCmd) Run(e *env) error {
	failed := 0
	for _, f := range c.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if c.DryRun {
			def, err := e.client.Validate(data)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
				failed++
				continue
			}
			fmt.Fprintf(e.out, "%s: workflow %s is valid (%d nodes)\n", f, def.ID, len(def.Nodes))
			continue
		}
		id, version, err := e.client.Deploy(e.ctx, data)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed++
			continue
		}
		fmt.Fprintf(e.out, "deployed workflow %s version %d (%s)\n", id, version, f)
	}
	if failed > 0 {
		return &exitError{code: exitFailed, msg: fmt.Sprintf("%d of %d definitions not deployed; fix the errors above", failed, len(c.Files))}
	}
	return nil
}
