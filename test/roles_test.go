package test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/risk"
	"github.com/flowguard/flowguard/internal/schedule"
	"github.com/flowguard/flowguard/internal/worker"
)

// rolePasswords are the passwords of the users of deploy/nats/auth.conf in tests.
// Bots b1 and b2 are users named by their bot ids.
var rolePasswords = map[string]string{"worker": "worker-pw", "b1": "b1-pw", "b2": "b2-pw", "operator": "operator-pw", "viewer": "viewer-pw", "console": "console-pw"}

// rolesServer starts a server with the users and permissions the cluster ships.
func rolesServer(t *testing.T) *natstest.Server {
	t.Helper()
	for user, pw := range rolePasswords {
		t.Setenv("FLOWGUARD_"+strings.ToUpper(user)+"_PASSWORD", pw)
	}
	opts, err := server.ProcessConfigFile("../deploy/nats/auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	return natstest.StartWith(t, opts)
}

// violations collects the permissions violations the server reports to a connection.
type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.errs = append(v.errs, err)
	}
}

func (v *violations) list() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]error(nil), v.errs...)
}

// connectAs connects as a user of auth.conf; extra options come last.
func connectAs(t *testing.T, url, user string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.UserInfo(user, rolePasswords[user]), nats.Name(user)}, extra...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// asWorker makes a worker connect as the worker user, with a short ack wait.
func asWorker(url string) func(*worker.Config) {
	return func(c *worker.Config) {
		c.NATS.URL, c.NATS.User, c.NATS.Password = url, "worker", rolePasswords["worker"]
		c.Consumer.AckWait, c.Consumer.ShutdownGrace = 3*time.Second, 10*time.Millisecond
	}
}

// TestRolesDoTheirWorkWithoutAViolation runs what each role of deploy/nats/auth.conf
// exists for, as the publisher and the workers do it, and checks that the server
// refused nothing: the permissions are complete.
func TestRolesDoTheirWorkWithoutAViolation(t *testing.T) {
	srv := rolesServer(t)
	var opViolations, botViolations violations
	h := harnessOn(t, connectAs(t, srv.URL(), "operator", nats.ErrorHandler(opViolations.handler)))
	h.srv = srv
	h.workerLogs = &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", h.workerLogs.String())
		}
	})
	stopFirst := h.startWorker("w1", asWorker(srv.URL()))
	hb := harnessOn(t, connectAs(t, srv.URL(), "b1", nats.ErrorHandler(botViolations.handler)))
	hb2 := harnessOn(t, connectAs(t, srv.URL(), "b2", nats.ErrorHandler(botViolations.handler)))
	bot := hb.client
	ctx := h.ctx

	// Operator: deploy workflows, set and remove risk limits, report metrics.
	h.deploy(fmt.Sprintf(crashWorkflow, "1s"))
	h.deploy(`{"id": "book", "nodes": [{"id": "pnl", "type": "risk_update", "config": {"pnl": "inputs.pnl"}}]}`)
	if err := h.client.SetLimit(ctx, "bot.b2", contract.RiskLimit{ID: "max-loss", Type: contract.LimitDailyLoss, Threshold: 10, AutoHalt: true}); err != nil {
		t.Fatal(err)
	}
	if err := h.client.SetLimit(ctx, "global", contract.RiskLimit{ID: "spare", Type: contract.LimitDailyLoss, Threshold: 1e9}); err != nil {
		t.Fatal(err)
	}
	if err := h.client.RemoveLimit(ctx, "global", "spare"); err != nil {
		t.Fatal(err)
	}
	gain := 1.0
	if _, err := h.client.ReportMetrics(ctx, "b3", contract.RiskUpdate{PnL: &gain}, risk.TradingDay{}); err != nil {
		t.Fatal(err)
	}

	// Bot: run a workflow and follow it to the end (run --wait), read its state.
	id, err := bot.Submit(ctx, &contract.Request{WorkflowID: "crash", BotID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := bot.Follow(wctx, client.Filter{BotID: "b1", WorkflowID: "crash", ExecutionID: id}, true, func(ev *contract.Event) bool {
		return ev.Type == contract.ExecutionCompleted
	}); err != nil {
		t.Fatalf("bot follows its execution: %v", err)
	}
	if st, err := bot.Status(ctx, "", id); err != nil || st.Status != contract.StatusCompleted {
		t.Fatalf("bot reads the status: %+v %v", st, err)
	}
	if _, err := bot.Result(ctx, "crash", id); err != nil {
		t.Fatalf("bot reads the result: %v", err)
	}
	if latest, err := bot.Latest(ctx, "crash"); err != nil || latest != id {
		t.Fatalf("bot reads the latest execution: %q %v", latest, err)
	}

	// Workers: resume an execution another worker handed back (checkpoints, last event).
	resumed := hb.submit(&contract.Request{WorkflowID: "crash", BotID: "b1"})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if len(runningOn(h, "crash", []string{resumed}, "w1")) == 0 {
			return errors.New("not running on w1 yet")
		}
		return nil
	})
	stopFirst()
	h.startWorker("w2", asWorker(srv.URL()))
	if st := h.waitStatus("crash", resumed, 20*time.Second); st.Status != contract.StatusCompleted || st.WorkerID != "w2" {
		t.Fatalf("resumed execution: %s on %s", st.Status, st.WorkerID)
	}
	// A risk_update node writes metrics; the breach makes a worker publish a halt.
	hb2.submit(&contract.Request{WorkflowID: "book", BotID: "b2", Inputs: map[string]any{"pnl": -50}})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if len(h.messages(contract.StreamEmergency, "flow.emergency.auto.bot.b2")) == 0 {
			return errors.New("no auto-halt yet")
		}
		return nil
	})
	// A request that can never run is dead-lettered.
	hb.submit(&contract.Request{WorkflowID: "not-deployed", BotID: "b1"})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if len(h.deadLetters()) == 0 {
			return errors.New("no dead letter yet")
		}
		return nil
	})

	// A worker that starts on a risk bucket larger than a flow control window
	// answers the flow control of its watch.
	custom := map[string]float64{}
	for i := range 2000 {
		custom[fmt.Sprintf("signal_%04d", i)] = float64(i)
	}
	for i := range 40 {
		if _, err := h.client.ReportMetrics(ctx, fmt.Sprintf("big%02d", i), contract.RiskUpdate{Custom: custom}, risk.TradingDay{}); err != nil {
			t.Fatal(err)
		}
	}
	h.startWorker("w3", asWorker(srv.URL()))

	// Operator: emergency commands, breaker orders and reading everything.
	for _, action := range []string{"halt", "pause", "resume"} {
		h.command("bot.b2", action, "roles test")
	}
	for _, action := range []string{contract.BreakerActionOpen, contract.BreakerActionClose} {
		if err := h.client.OrderBreaker(ctx, &contract.BreakerOverride{Provider: "exchange", Action: action, Reason: "roles test", IssuedAt: time.Now()}); err != nil {
			t.Fatalf("breaker %s: %v", action, err)
		}
	}
	if _, err := h.client.Breakers(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// Operator: rate limits and schedules. Workers count the budgets, pause a
	// provider that answers 429, and forward schedules' firings.
	if err := h.client.SetRateLimits(ctx, "api", contract.RateLimits{Budgets: []contract.Budget{{Name: "calls", Limit: 100, Window: "1s"}}}); err != nil {
		t.Fatal(err)
	}
	api := newWindowedAPI(t, time.Second)
	api.refuse = "1"
	h.deploy(fmt.Sprintf(limitedWorkflow, "limited", `"weight": 1, "budgets": ["calls"],`, api.URL))
	if st := h.waitStatus("limited", hb.submit(&contract.Request{WorkflowID: "limited", BotID: "b1"}), 30*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("rate-limited call after a 429: %s %+v", st.Status, st.Error)
	}
	if limits, err := h.client.RateLimits(ctx); err != nil || len(limits) != 1 || len(limits[0].Budgets) != 1 || limits[0].Pause == nil {
		t.Fatalf("rate limits %+v, %v; want the budget and the pause of api", limits, err)
	}
	if err := h.client.RemoveRateLimits(ctx, "api", true); err != nil {
		t.Fatal(err)
	}
	h.deploy(quickWorkflow)
	book := h.client.Schedules()
	if err := book.Add(ctx, schedule.Spec{Name: "roles", Every: time.Second, Request: contract.Request{WorkflowID: "quick", BotID: "b1"}}, false); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		for _, m := range h.messages(contract.StreamEvents, "flow.events.*.quick.*."+contract.ExecutionCompleted) {
			if strings.Contains(m.Subject(), ".roles-") {
				return nil
			}
		}
		return errors.New("no firing completed yet")
	})
	for _, step := range []func() error{
		func() error { return book.Pause(ctx, "roles", "test") },
		func() error { return book.Resume(ctx, "roles") },
		func() error { _, err := book.List(ctx); return err },
		func() error { return book.Remove(ctx, "roles") },
	} {
		if err := step(); err != nil {
			t.Fatalf("schedule: %v", err)
		}
	}

	// The workers' micro service answers the operator.
	if reply, err := h.nc.Request("$SRV.PING.flowguard-worker", nil, 2*time.Second); err != nil {
		t.Fatalf("micro ping: %v", err)
	} else if !strings.Contains(string(reply.Data), "flowguard-worker") {
		t.Fatalf("micro ping: %s", reply.Data)
	}
	if _, err := h.nc.Request("flow.workers.w3.status", nil, 2*time.Second); err != nil {
		t.Fatalf("worker status endpoint: %v", err)
	}
	if _, err := h.client.History(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Board(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Risk(ctx); err != nil {
		t.Fatal(err)
	}
	orders := 0
	if err := h.client.FollowOrders(ctx, "", true, func(*contract.OrderIntent, uint64) bool { orders++; return orders == 2 }); err != nil {
		t.Fatal(err)
	}
	if st, err := h.client.Status(ctx, "", resumed); err != nil || st.Status != contract.StatusCompleted {
		t.Fatalf("operator reads a status: %+v %v", st, err)
	}

	// Let late asynchronous errors (flow control, consumer deletes) arrive.
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for role, v := range map[string]*violations{"operator": &opViolations, "bot": &botViolations} {
		for _, err := range v.list() {
			t.Errorf("%s: %v", role, err)
		}
	}
	if strings.Contains(h.workerLogs.String(), "lacks a permission") {
		t.Errorf("the server refused workers an operation:\n%s", h.workerLogs.String())
	}
}

// TestRolesAreRefusedWhatTheyMayNotDo checks that the server refuses each role what
// it must not do, and that the publisher then fails at once with the reason.
func TestRolesAreRefusedWhatTheyMayNotDo(t *testing.T) {
	srv := rolesServer(t)
	h := harnessOn(t, connectAs(t, srv.URL(), "operator"))
	h.srv = srv
	h.startWorker("w1", asWorker(srv.URL()))
	h.deploy(quickWorkflow)

	workersConsumer := func(ctx context.Context, js jetstream.JetStream) error {
		cons, err := js.Consumer(ctx, contract.StreamExec, consumer.DefaultDurable)
		if err != nil {
			return err
		}
		batch, err := cons.Fetch(1, jetstream.FetchContext(ctx))
		if err != nil {
			return err
		}
		for range batch.Messages() {
		}
		return batch.Error()
	}
	gain := 1.0
	cases := []struct {
		user, what string
		do         func(ctx context.Context, c *client.Client, js jetstream.JetStream) error
	}{
		{"b1", "halt", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Emergency(ctx, "global", contract.EmergencyCommand{Action: "halt", Reason: "a bot tries"})
			return err
		}},
		{"b1", "set a risk limit", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			return c.SetLimit(ctx, "bot.b1", contract.RiskLimit{ID: "loose", Type: contract.LimitDailyLoss, Threshold: 1e12})
		}},
		{"b1", "report its own metrics", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.ReportMetrics(ctx, "b1", contract.RiskUpdate{PnL: &gain}, risk.TradingDay{})
			return err
		}},
		{"b1", "start an execution as another bot", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Submit(ctx, &contract.Request{WorkflowID: "quick", BotID: "b2"})
			return err
		}},
		{"b1", "start an execution that names no bot", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Submit(ctx, &contract.Request{WorkflowID: "quick"})
			return err
		}},
		{"b1", "deploy a workflow", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, _, err := c.Deploy(ctx, []byte(quickWorkflow))
			return err
		}},
		{"b1", "take requests from the workers' consumer", func(ctx context.Context, _ *client.Client, js jetstream.JetStream) error {
			return workersConsumer(ctx, js)
		}},
		{"b1", "read another bot's events", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			return c.Follow(ctx, client.Filter{BotID: "b2"}, true, func(*contract.Event) bool { return true })
		}},
		{"b1", "read every bot's events", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			return c.Follow(ctx, client.Filter{}, true, func(*contract.Event) bool { return true })
		}},
		{"operator", "publish a request", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Submit(ctx, &contract.Request{WorkflowID: "quick"})
			return err
		}},
		{"operator", "take requests from the workers' consumer", func(ctx context.Context, _ *client.Client, js jetstream.JetStream) error {
			return workersConsumer(ctx, js)
		}},
		{"operator", "delete the workers' consumer", func(ctx context.Context, _ *client.Client, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, contract.StreamExec, consumer.DefaultDurable)
		}},
		{"worker", "set a risk limit", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			return c.SetLimit(ctx, "global", contract.RiskLimit{ID: "loose", Type: contract.LimitDailyLoss, Threshold: 1e12})
		}},
		{"worker", "resume a scope", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Emergency(ctx, "global", contract.EmergencyCommand{Action: "resume", Reason: "a compromised worker tries"})
			return err
		}},
		{"worker", "pause a scope", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Emergency(ctx, "bot.b1", contract.EmergencyCommand{Action: "pause", Reason: "a compromised worker tries"})
			return err
		}},
		{"worker", "publish a request", func(ctx context.Context, c *client.Client, _ jetstream.JetStream) error {
			_, err := c.Submit(ctx, &contract.Request{WorkflowID: "quick"})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.user+" may not "+tc.what, func(t *testing.T) {
			// The server reports the refusal asynchronously; it ends the operation.
			ctx, refused := context.WithCancelCause(h.ctx)
			defer refused(nil)
			nc := connectAs(t, srv.URL(), tc.user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					refused(err)
				}
			}))
			c, err := client.New(nc, "")
			if err != nil {
				t.Fatal(err)
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.do(ctx, c, js); err == nil {
				t.Fatal("allowed")
			}
			if cause := context.Cause(ctx); !errors.Is(cause, nats.ErrPermissionViolation) {
				t.Fatalf("not refused by the server's permissions: %v", cause)
			}
		})
	}

	// Nothing of it happened.
	if n := len(h.messages(contract.StreamEmergency, "flow.emergency.>")); n != 0 {
		t.Errorf("%d emergency commands stored", n)
	}
	if st, err := h.client.Risk(h.ctx); err != nil || len(st.Limits) != 0 || len(st.Metrics) != 0 {
		t.Errorf("risk state changed: %+v %v", st, err)
	}
	if _, err := h.js.Consumer(h.ctx, contract.StreamExec, consumer.DefaultDurable); err != nil {
		t.Errorf("the workers' consumer: %v", err)
	}

	t.Run("the publisher says why it was refused", func(t *testing.T) {
		_, publisherBin := binaries(t)
		publisher := func(user string, args ...string) (int, string, time.Duration) {
			t0 := time.Now()
			p := start(t, publisherBin, append([]string{"--nats-url", srv.URL(), "--nats-user", user, "--nats-password", rolePasswords[user]}, args...)...)
			code := p.wait(t, 30*time.Second)
			return code, p.out.String(), time.Since(t0)
		}
		code, out, took := publisher("b1", "halt", "--reason", "a bot tries")
		if code != 7 || !strings.Contains(out, `Permissions Violation for Publish to "flow.emergency.global"`) || !strings.Contains(out, "use the credentials of a role that may") {
			t.Errorf("bot halt: exit %d after %s\n%s", code, took, out)
		}
		if took > 3*time.Second {
			t.Errorf("the refusal took %s; it should not wait for a timeout", took)
		}
		if code, out, _ := publisher("operator", "halt", "--scope", "bot.b1", "--reason", "the operator may"); code != 0 {
			t.Errorf("operator halt: exit %d\n%s", code, out)
		}
		if code, out, _ := publisher("b1", "events", "--replay"); code != 7 || !strings.Contains(out, "a bot may read only its own events; add --bot") {
			t.Errorf("bot events without --bot: exit %d\n%s", code, out)
		}
		if code, out, _ := publisher("b1", "run", "quick", "--bot", "b1", "--wait"); code != exitHaltedCode || !strings.Contains(out, "execution_halted") {
			t.Errorf("bot run --wait after the operator's halt: exit %d\n%s", code, out)
		}
	})
}

// exitHaltedCode is the publisher's exit code for a halted execution.
const exitHaltedCode = 2
