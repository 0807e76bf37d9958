package console_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/console"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/resilience"
	"github.com/flowguard/flowguard/internal/risk"
	"github.com/flowguard/flowguard/internal/schedule"
	"github.com/flowguard/flowguard/internal/worker"
)

const testToken = "console-test-token-0123456789"

const twoStep = `{"id": "two-step", "nodes": [
  {"id": "double", "type": "transform", "config": {"outputs": {"x": "inputs.n * 2"}}},
  {"id": "plus_one", "type": "transform", "depends_on": ["double"], "config": {"outputs": {"y": "nodes.double.x + 1"}}}]}`

// deployment is a test's NATS server, worker and console.
type deployment struct {
	t      *testing.T
	nc     *nats.Conn
	client *client.Client
	url    string // the console's
	ctx    context.Context
}

// startDeployment starts an embedded server, one worker with a breaker that opens
// after 3 failures, and a console with a token.
func startDeployment(t *testing.T) *deployment {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	cl, err := client.New(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	cfg := worker.Config{WorkerID: "w1", Version: "1.2.3", EgressAllow: []string{"127.0.0.1"}} // the test provider is on loopback
	cfg.NATS.URL = srv.URL()
	cfg.Consumer = consumer.Config{ShutdownGrace: 5 * time.Second}
	cfg.Resilience.Overrides = resilience.Settings{
		Retry:   resilience.RetrySettings{MaxAttempts: 1},
		Breaker: resilience.BreakerSettings{Threshold: 3, OpenTime: 10 * time.Minute},
	}
	w, err := worker.New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !w.Ready() {
			return errors.New("worker not ready")
		}
		return nil
	})

	con, err := console.New(natstest.Connect(t, srv.URL()), "", console.Config{Token: testToken, FleetInterval: 500 * time.Millisecond}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := con.Run(ctx, ln); err != nil {
			t.Errorf("console: %v", err)
		}
	}()
	return &deployment{t: t, nc: nc, client: cl, url: "http://" + ln.Addr().String(), ctx: ctx}
}

func (d *deployment) status(workflowID, id string, want string) *contract.Status {
	d.t.Helper()
	var st *contract.Status
	natstest.WaitFor(d.t, 30*time.Second, func() error {
		var err error
		if st, err = d.client.Status(d.ctx, workflowID, id); err != nil {
			return err
		}
		if st.Status != want {
			return fmt.Errorf("status %s, want %s", st.Status, want)
		}
		return nil
	})
	return st
}

// publish publishes a request with plain NATS, as `nats pub` does.
func (d *deployment) publish(workflowID, requestID string) {
	d.t.Helper()
	data := fmt.Sprintf(`{"request_id": %q, "workflow_id": %q, "bot_id": "b1", "inputs": {"n": 20}}`, requestID, workflowID)
	if err := d.nc.Publish("flow.exec."+workflowID+".b1", []byte(data)); err != nil {
		d.t.Fatal(err)
	}
}

// newBrowser starts a headless Chromium with its own profile, or skips the test
// when there is none and FLOWGUARD_REQUIRE_BROWSER is unset.
func newBrowser(t *testing.T) context.Context {
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("FLOWGUARD_REQUIRE_BROWSER") != "" {
			t.Fatal("FLOWGUARD_REQUIRE_BROWSER is set and no chromium is on the PATH: apt-get install -y chromium")
		}
		t.Skip("no chromium on the PATH (apt-get install -y chromium); set FLOWGUARD_REQUIRE_BROWSER=1 to fail instead")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser actions, failing the test after a generous deadline.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	_ = value(t, ctx, what, chromedp.Steps(actions...))
}

// value runs a browser action and returns its value, failing the test after a
// generous deadline.
func value[T any](t *testing.T, ctx context.Context, what string, action chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, action)
	if err != nil {
		location, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s (at %s): %v", what, location, err)
	}
	return v
}

func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

// screenshot writes docs/console/<name>.png when FLOWGUARD_UPDATE_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("FLOWGUARD_UPDATE_SCREENSHOTS") != "1" {
		return
	}
	png := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join("..", "..", "docs", "console", name+".png")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConsoleInBrowser(t *testing.T) {
	browser := newBrowser(t)
	d := startDeployment(t)
	if _, _, err := d.client.Deploy(d.ctx, []byte(twoStep)); err != nil {
		t.Fatal(err)
	}

	t.Run("an execution published with plain NATS appears live, with its nodes", func(t *testing.T) {
		run(t, browser, "open the executions", chromedp.Navigate(d.url+"/executions"), visible("#executions"))
		published := time.Now()
		d.publish("two-step", "live-1")
		run(t, browser, "the new execution shows without a reload", visible(`tr[data-id="live-1"]`))
		t.Logf("the execution showed %s after it was published", time.Since(published).Round(time.Millisecond))
		d.status("two-step", "live-1", contract.StatusCompleted)
		run(t, browser, "its row turns completed", visible(`tr[data-id="live-1"] .s-completed`))

		run(t, browser, "open the execution", chromedp.Click(chromedp.CSS(`tr[data-id="live-1"] a`)),
			visible(`#timeline .lane[data-node="double"] rect.seg-ok`), visible(`#timeline .lane[data-node="plus_one"] rect.seg-ok`))
		correlation := value(t, browser, "read the correlation id", chromedp.Text(chromedp.CSS("#correlation")))
		if correlation != "exec_two-step_live-1" {
			t.Errorf("correlation id shown %q, want exec_two-step_live-1", correlation)
		}
		inputs := value(t, browser, "read the inputs", chromedp.Text(chromedp.CSS("#inputs")))
		if !strings.Contains(inputs, `"n": 20`) {
			t.Errorf("inputs shown %q, want the request's {\"n\": 20}", inputs)
		}
	})

	t.Run("a node's retries show as attempts and waits", func(t *testing.T) {
		var mu sync.Mutex
		calls := 0
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			if n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"msg": "busy"}`))
				return
			}
			_, _ = w.Write([]byte(`{"price": 65000.5}`))
		}))
		defer api.Close()
		def := fmt.Sprintf(`{"id": "flaky-quote", "nodes": [
		  {"id": "quote", "type": "http", "provider": "flaky", "retry": {"max_attempts": 3, "min_wait": "150ms", "max_wait": "300ms"},
		   "config": {"url": %q, "outputs": {"price": "body.price"}}},
		  {"id": "spread", "type": "transform", "depends_on": ["quote"], "config": {"outputs": {"bid": "nodes.quote.price - 0.5"}}}]}`, api.URL)
		if _, _, err := d.client.Deploy(d.ctx, []byte(def)); err != nil {
			t.Fatal(err)
		}
		d.publish("flaky-quote", "retried-1")
		d.status("flaky-quote", "retried-1", contract.StatusCompleted)
		run(t, browser, "the quote node shows two failed attempts, two waits and a success",
			chromedp.Navigate(d.url+"/executions/flaky-quote/retried-1"),
			visible(`#timeline .lane[data-node="quote"] rect.seg-failed`), visible(`#timeline .lane[data-node="quote"] rect.seg-wait`),
			visible(`#timeline .lane[data-node="quote"] rect.seg-ok`), visible(`#timeline .lane[data-node="spread"] rect.seg-ok`))
		segments := value(t, browser, "count the quote's segments", chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#timeline .lane[data-node="quote"] rect')].map(r => r.getAttribute("class"))`))
		if want := []string{"seg seg-failed", "seg seg-wait", "seg seg-failed", "seg seg-wait", "seg seg-ok"}; !slices.Equal(segments, want) {
			t.Errorf("quote segments %v, want %v", segments, want)
		}
		screenshot(t, browser, "execution")
	})

	t.Run("an action without the token is refused", func(t *testing.T) {
		form := url.Values{"scope": {"global"}, "action": {"halt"}, "reason": {"no token"}, "confirm": {"global"}}
		resp, err := http.PostForm(d.url+"/emergency", form)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /emergency without credentials: %s, want 403", resp.Status)
		}
		run(t, browser, "halt from a browser that is not signed in",
			chromedp.Navigate(d.url+"/emergency"), visible("#emergency-form"),
			chromedp.SetValue(chromedp.CSS(`#emergency-form input[name="reason"]`), "no token"),
			chromedp.SetValue(chromedp.CSS(`#emergency-form input[name="confirm"]`), "global"),
			chromedp.Click(chromedp.CSS("#halt")), visible("#refused"))
		board, err := d.client.Board(d.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st := board.Get("global"); st.State != "active" {
			t.Fatalf("global is %s after refused halts", st.State)
		}
	})

	t.Run("Halt with a reason halts the fleet and the next request is refused", func(t *testing.T) {
		run(t, browser, "sign in with the token",
			chromedp.Navigate(d.url+"/login?next=/emergency"), visible("#login-form"),
			chromedp.SetValue(chromedp.CSS(`#login-form input[name="token"]`), testToken),
			chromedp.Click(chromedp.CSS("#login")), visible("#emergency-form"), visible("#logout"))
		emergencyAction(t, browser, d.url, "halt", "desk drill: runaway bot")
		run(t, browser, "global shows halted, applied by every worker",
			visible(`tr[data-scope="global"] .e-halted`), visible(`tr[data-scope="global"] .applied .tag.ok`))
		screenshot(t, browser, "emergency")

		d.publish("two-step", "after-halt")
		st := d.status("two-step", "after-halt", contract.StatusHalted)
		if st.Error == nil || !strings.Contains(st.Error.Message, "desk drill: runaway bot") {
			t.Errorf("the halted request's error %+v does not carry the reason", st.Error)
		}

		emergencyAction(t, browser, d.url, "resume", "drill over")
		run(t, browser, "global shows active, applied by every worker",
			visible(`tr[data-scope="global"] .e-active`), visible(`tr[data-scope="global"] .applied .tag.ok`))
	})

	t.Run("a breaker opened by failures shows open, and an operator closes it", func(t *testing.T) {
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		defer api.Close()
		def := fmt.Sprintf(`{"id": "quote", "nodes": [{"id": "call", "type": "http", "provider": "exchange", "config": {"url": %q}}]}`, api.URL)
		if _, _, err := d.client.Deploy(d.ctx, []byte(def)); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "open the providers", chromedp.Navigate(d.url+"/providers"), visible("#providers"))
		for i := range 3 {
			id := fmt.Sprintf("quote-%d", i)
			d.publish("quote", id)
			d.status("quote", id, contract.StatusFailed)
		}
		run(t, browser, "the breaker shows open", visible(`tr[data-provider="exchange"] .b-open`))
		screenshot(t, browser, "providers")

		run(t, browser, "close it with a reason",
			chromedp.SetValue(chromedp.CSS(`#breaker-form input[name="provider"]`), "exchange"),
			chromedp.SetValue(chromedp.CSS(`#breaker-form select[name="action"]`), "close"),
			chromedp.SetValue(chromedp.CSS(`#breaker-form input[name="reason"]`), "provider back"),
			chromedp.Submit(chromedp.CSS("#breaker-form")), visible("#flash"),
			visible(`tr[data-provider="exchange"] td:nth-child(2) .b-closed`))
	})

	t.Run("a dead letter re-published completes", func(t *testing.T) {
		d.publish("later", "too-early")
		run(t, browser, "the dead letter shows", chromedp.Navigate(d.url+"/dlq"), visible(`#dlq tr[data-seq] a`))
		screenshot(t, browser, "dlq")
		if _, _, err := d.client.Deploy(d.ctx, []byte(strings.Replace(twoStep, "two-step", "later", 1))); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "re-publish it",
			chromedp.Click(chromedp.CSS(`#dlq tr[data-seq] a`)), visible("#request"),
			chromedp.Click(chromedp.CSS("#republish")), visible("#flash"),
			visible(`#exec-status .s-completed`))
		location := value(t, browser, "read the location", chromedp.Location())
		id := location[strings.LastIndex(location, "/")+1:]
		if i := strings.IndexByte(id, '?'); i >= 0 {
			id = id[:i]
		}
		if id == "too-early" {
			t.Fatalf("re-published under the old request id")
		}
		d.status("later", id, contract.StatusCompleted)
	})

	t.Run("fleet, risk and plots show", func(t *testing.T) {
		run(t, browser, "the worker is in the fleet, ready", chromedp.Navigate(d.url+"/fleet"), visible(`tr[data-worker="w1"] .s-completed`))
		screenshot(t, browser, "fleet")

		if err := d.client.SetLimit(d.ctx, "bot.b1", contract.RiskLimit{ID: "max-daily-loss", Type: contract.LimitDailyLoss, Threshold: 1000, AutoHalt: true}); err != nil {
			t.Fatal(err)
		}
		if err := d.client.SetLimit(d.ctx, "global", contract.RiskLimit{ID: "btc-size", Type: contract.LimitPositionSize, Symbol: "BTCUSDT", Threshold: 2}); err != nil {
			t.Fatal(err)
		}
		day, err := risk.ParseTradingDay("00:00", "UTC")
		if err != nil {
			t.Fatal(err)
		}
		pnl, equity := -850.0, 9150.0
		if _, err := d.client.ReportMetrics(d.ctx, "b1", contract.RiskUpdate{PnL: &pnl, Equity: &equity,
			Positions: map[string]contract.Position{"BTCUSDT": {Quantity: 0.5, Notional: 32500}}}, day); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "the limits show beside the metrics", chromedp.Navigate(d.url+"/risk"),
			visible(`section[data-bot="b1"] tr[data-limit="max-daily-loss"].g-warn`), visible(`section[data-bot="b1"] tr[data-limit="btc-size"].g-ok`))
		more := -300.0
		if _, err := d.client.ReportMetrics(d.ctx, "b1", contract.RiskUpdate{PnL: &more}, day); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "the breach shows, and the worker's auto-halt beside it",
			visible(`section[data-bot="b1"] tr[data-limit="max-daily-loss"].g-breach .auto-halted`))
		screenshot(t, browser, "risk")
		run(t, browser, "the emergency view marks the auto-halt", chromedp.Navigate(d.url+"/emergency"),
			visible(`tr[data-scope="bot.b1"] .e-halted`), visible(`tr[data-scope="bot.b1"] .tag.bad`))

		run(t, browser, "the plots show", chromedp.Navigate(d.url+"/plots"), visible(`section[data-workflow="two-step"] svg.chart`))
		screenshot(t, browser, "plots")

		run(t, browser, "the executions so far", chromedp.Navigate(d.url+"/executions"), visible(`tr[data-id="live-1"]`))
		screenshot(t, browser, "executions")

		run(t, browser, "on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
			chromedp.Navigate(d.url+"/executions"), visible(`tr[data-id="live-1"]`))
		screenshot(t, browser, "executions-phone")
	})

	t.Run("schedules show live, with their last firing", func(t *testing.T) {
		book := d.client.Schedules()
		run(t, browser, "open the schedules", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(d.url+"/schedules"), visible("#schedules"))
		// Bot b2: b1 is auto-halted by the risk test above.
		req := contract.Request{WorkflowID: "two-step", BotID: "b2", Inputs: map[string]any{"n": 3}}
		if err := book.Add(d.ctx, schedule.Spec{Name: "every-second", Request: req, Every: time.Second}, false); err != nil {
			t.Fatal(err)
		}
		if err := book.Add(d.ctx, schedule.Spec{Name: "london-open", Request: contract.Request{WorkflowID: "two-step"}, Cron: "0 8 * * 1-5", TimeZone: "Europe/London"}, false); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "both show without a reload, the first fired and completed",
			visible(`tr[data-schedule="every-second"] .e-active`), visible(`tr[data-schedule="london-open"] .e-active`),
			visible(`tr[data-schedule="every-second"] .last a`), visible(`tr[data-schedule="every-second"] .last .s-completed`))
		when := value(t, browser, "read the cron", chromedp.Text(chromedp.CSS(`tr[data-schedule="london-open"] .when`)))
		if when != "0 0 8 * * 1-5 Europe/London" {
			t.Errorf("the cron schedule shows %q, want its 6-field cron and its zone", when)
		}
		last := value(t, browser, "read the last firing's link", chromedp.AttributeValue(`tr[data-schedule="every-second"] .last a`, "href"))
		if !strings.HasPrefix(last.Value, "/executions/two-step/every-second-") {
			t.Errorf("the last firing links to %q, want an execution every-second-<time>", last.Value)
		}

		if err := book.Pause(d.ctx, "every-second", "desk"); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "the pause shows", visible(`tr[data-schedule="every-second"] .e-paused`))
		screenshot(t, browser, "schedules")

		if err := book.Remove(d.ctx, "london-open"); err != nil {
			t.Fatal(err)
		}
		run(t, browser, "the removed schedule goes", chromedp.WaitNotPresent(chromedp.CSS(`tr[data-schedule="london-open"]`)),
			visible(`tr[data-schedule="every-second"]`))
	})
}

// emergencyAction fills the emergency form for scope global and sends action.
func emergencyAction(t *testing.T, browser context.Context, consoleURL, action, reason string) {
	t.Helper()
	run(t, browser, action+" global",
		chromedp.Navigate(consoleURL+"/emergency"), visible("#emergency-form"),
		chromedp.SetValue(chromedp.CSS(`#emergency-form input[name="reason"]`), reason),
		chromedp.SetValue(chromedp.CSS(`#emergency-form input[name="confirm"]`), "global"),
		chromedp.Click(chromedp.CSS("#"+action)), visible("#flash"))
}
