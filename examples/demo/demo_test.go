package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/examples/mockexchange"
	"github.com/flowguard/flowguard/schemas"
)

// TestWorkflowsValidate checks the demo's workflows against the workflow schema.
func TestWorkflowsValidate(t *testing.T) {
	files, err := fs.Glob(workflows, "workflows/*.json")
	if err != nil || len(files) != 3 {
		t.Fatalf("workflows %v, %v: want 3", files, err)
	}
	for _, f := range files {
		data, err := workflows.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.ValidateJSON(schemas.Workflow, data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestDemoShort plays the demo in short mode against an exchange this test owns,
// and checks that each scenario shows its events and no order was placed twice.
func TestDemoShort(t *testing.T) {
	ex, err := mockexchange.Start(mockexchange.Config{WeightLimit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	opts := Options{Short: true, ExchangeURL: ex.URL}
	if os.Getenv("FLOWGUARD_TEST_LOG") != "" {
		opts.WorkerLog = os.Stderr
	}
	s, err := Run(ctx, opts, &out)
	if testing.Verbose() || err != nil || len(s.Problems()) > 0 {
		t.Log("\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Problems() {
		t.Error(p)
	}

	// Every order at the exchange answers one intent, and each client order id was
	// placed once.
	orders := ex.Orders()
	if len(orders) == 0 || len(orders) != s.Intents {
		t.Errorf("%d orders at the exchange for %d intents", len(orders), s.Intents)
	}
	seen := map[string]bool{}
	for _, o := range orders {
		if seen[o.ClientOrderID] {
			t.Errorf("client order id %s placed twice", o.ClientOrderID)
		}
		seen[o.ClientOrderID] = true
		if !strings.HasSuffix(o.ClientOrderID, ".order") && !strings.HasSuffix(o.ClientOrderID, ".trim") {
			t.Errorf("order %+v does not carry an order node's client order id", o)
		}
	}
	// Both bots traded at once in the last scenario.
	for _, bot := range []string{"b1", "b2"} {
		found := false
		for _, o := range orders {
			found = found || o.Account == bot
		}
		if !found {
			t.Errorf("no order of bot %s", bot)
		}
	}
	for _, want := range []string{"breaker exchange: closed → open", "half_open → closed", "emergency HALT bot.b1", "halted, no order", "emergency RESUME bot.b1", "== Summary"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the narration lacks %q", want)
		}
	}
}
