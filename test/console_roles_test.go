package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/console"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/risk"
	"github.com/flowguard/flowguard/internal/schedule"
)

const consoleToken = "roles-test-console-token"

// startConsole runs a console over nc until the test ends and returns its URL.
func startConsole(t *testing.T, nc *nats.Conn) string {
	t.Helper()
	c, err := console.New(nc, "", console.Config{Token: consoleToken, FleetInterval: 300 * time.Millisecond}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Run(ctx, ln); err != nil {
			t.Errorf("console: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return "http://" + ln.Addr().String()
}

// page reads a console page until it matches want.
func page(t *testing.T, base, path string, want string) string {
	t.Helper()
	var body string
	natstest.WaitFor(t, 20*time.Second, func() error {
		resp, err := http.Get(base + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		body = string(data)
		if !strings.Contains(body, want) {
			return fmt.Errorf("%s does not show %q yet", path, want)
		}
		return nil
	})
	return body
}

// pageWithout reads a console page until it no longer shows gone.
func pageWithout(t *testing.T, base, path, gone string) {
	t.Helper()
	natstest.WaitFor(t, 20*time.Second, func() error {
		resp, err := http.Get(base + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(data), gone) {
			return fmt.Errorf("%s still shows %q", path, gone)
		}
		return nil
	})
}

// act posts a console action with the token, as a script would, and returns the
// outcome the console redirects to.
func act(t *testing.T, base, path string, form url.Values) (ok, failed string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+consoleToken)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST %s: %s", path, resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query().Get("ok"), loc.Query().Get("err")
}

// TestConsoleRolesWatchAndActWithoutAViolation runs a console as each console role
// of deploy/nats/auth.conf: both show every view without a permissions violation,
// the operator role's actions succeed, and the viewer's are refused by the server.
func TestConsoleRolesWatchAndActWithoutAViolation(t *testing.T) {
	srv := rolesServer(t)
	h := harnessOn(t, connectAs(t, srv.URL(), "operator"))
	h.srv = srv
	h.startWorker("w1", asWorker(srv.URL()))
	h.deploy(twoStepWorkflow)
	bot := harnessOn(t, connectAs(t, srv.URL(), "b1"))
	id := bot.submit(&contract.Request{WorkflowID: "two-step", BotID: "b1", Inputs: map[string]any{"n": 1}})
	h.waitStatus("two-step", id, 20*time.Second)
	bot.submit(&contract.Request{WorkflowID: "not-deployed", BotID: "b1"})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if len(h.deadLetters()) == 0 {
			return fmt.Errorf("no dead letter yet")
		}
		return nil
	})
	if err := h.client.SetLimit(h.ctx, "bot.b1", contract.RiskLimit{ID: "max-loss", Type: contract.LimitDailyLoss, Threshold: 100}); err != nil {
		t.Fatal(err)
	}
	loss := -10.0
	if _, err := h.client.ReportMetrics(h.ctx, "b1", contract.RiskUpdate{PnL: &loss}, risk.TradingDay{}); err != nil {
		t.Fatal(err)
	}
	h.command("bot.b2", "pause", "roles test")
	if err := h.client.OrderBreaker(h.ctx, &contract.BreakerOverride{Provider: "exchange", Action: "open", Reason: "roles test", IssuedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	schedules := h.client.Schedules()
	if err := schedules.Add(h.ctx, schedule.Spec{Name: "london-open", Request: contract.Request{WorkflowID: "two-step", BotID: "b1"}, Cron: "0 8 * * *", TimeZone: "Europe/London"}, false); err != nil {
		t.Fatal(err)
	}
	dlqSeq := regexp.MustCompile(`data-seq="(\d+)"`)

	for _, role := range []string{"viewer", "console"} {
		t.Run(role, func(t *testing.T) {
			var v violations
			base := startConsole(t, connectAs(t, srv.URL(), role, nats.ErrorHandler(v.handler)))
			page(t, base, "/executions", id)
			page(t, base, "/executions/two-step/"+id, `data-node="plus_one"`)
			page(t, base, "/fleet", `data-worker="w1"`)
			page(t, base, "/providers", `data-provider="exchange"`)
			page(t, base, "/risk", `data-limit="max-loss"`)
			page(t, base, "/emergency", `data-scope="bot.b2"`)
			seq := dlqSeq.FindStringSubmatch(page(t, base, "/dlq", "data-seq="))[1]
			page(t, base, "/dlq/"+seq, "not-deployed")
			page(t, base, "/plots", `data-workflow="two-step"`)
			page(t, base, "/schedules", `data-schedule="london-open"`)
			// Added and removed while the console runs: it follows both.
			added := "added-for-" + role
			if err := schedules.Add(h.ctx, schedule.Spec{Name: added, Request: contract.Request{WorkflowID: "two-step"}, Cron: "0 9 * * *"}, false); err != nil {
				t.Fatal(err)
			}
			page(t, base, "/schedules", `data-schedule="`+added+`"`)
			if err := schedules.Remove(h.ctx, added); err != nil {
				t.Fatal(err)
			}
			pageWithout(t, base, "/schedules", `data-schedule="`+added+`"`)
			if errs := v.list(); len(errs) > 0 {
				t.Fatalf("the %s role lacks permissions to watch: %v", role, errs)
			}

			halt := url.Values{"scope": {"bot.b7"}, "action": {"halt"}, "reason": {"roles test"}, "confirm": {"bot.b7"}}
			breaker := url.Values{"provider": {"exchange"}, "action": {"close"}, "reason": {"roles test"}}
			if role == "viewer" {
				if ok, failed := act(t, base, "/emergency", halt); ok != "" || !strings.Contains(failed, "console operator role") {
					t.Errorf("a viewer console's halt: ok %q, error %q; want an error naming the role to use", ok, failed)
				}
				natstest.WaitFor(t, 10*time.Second, func() error {
					if len(v.list()) == 0 {
						return fmt.Errorf("the server has not refused the viewer's halt")
					}
					return nil
				})
				return
			}
			for _, a := range []struct {
				path string
				form url.Values
			}{
				{"/emergency", halt},
				{"/emergency", url.Values{"scope": {"bot.b7"}, "action": {"resume"}, "reason": {"roles test"}, "confirm": {"bot.b7"}}},
				{"/providers", breaker},
				{"/dlq/" + seq + "/republish", url.Values{}},
			} {
				if _, failed := act(t, base, a.path, a.form); failed != "" {
					t.Errorf("POST %s: %s", a.path, failed)
				}
			}
			if errs := v.list(); len(errs) > 0 {
				t.Fatalf("the console role lacks permissions to act: %v", errs)
			}
		})
	}
}
