package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
)

// crashWorkflow has a slow node, so that workers die mid-execution, and an order
// node, so that a replay that ordered twice would show.
const crashWorkflow = `{"id": "crash", "nodes": [
  {"id": "slow", "type": "delay", "config": {"duration": "%s"}},
  {"id": "buy", "type": "order", "depends_on": ["slow"], "config": {"symbol": "'BTCUSDT'", "side": "'buy'", "quantity": "0.001"}}
]}`

// processAckWait is the AckWait of worker processes in these tests: the time a dead
// worker's requests wait before another worker takes them.
const processAckWait = 3 * time.Second

// fleet is a set of worker processes against one NATS server.
type fleet struct {
	t      *testing.T
	url    string
	args   []string
	mu     sync.Mutex
	procs  map[string]*proc
	starts int
}

// newFleet is a fleet whose workers run with --ack-wait processAckWait and args.
func newFleet(t *testing.T, url string, args ...string) *fleet {
	return newDefaultFleet(t, url, append([]string{"--ack-wait", processAckWait.String()}, args...)...)
}

// newDefaultFleet is a fleet whose workers run with the default settings but args.
func newDefaultFleet(t *testing.T, url string, args ...string) *fleet {
	return &fleet{t: t, url: url, args: args, procs: map[string]*proc{}}
}

// start runs a worker process named id, with extra arguments of its own, and waits
// until it takes requests.
func (f *fleet) start(id string, extra ...string) *proc {
	f.t.Helper()
	workerBin, _ := binaries(f.t)
	args := append([]string{"--nats-url", f.url, "--worker-id", id, "--log-format", "json"}, f.args...)
	p := start(f.t, workerBin, append(args, extra...)...)
	natstest.WaitFor(f.t, 30*time.Second, func() error {
		if !strings.Contains(p.out.String(), "consumer bound") {
			return fmt.Errorf("worker %s not consuming yet", id)
		}
		return nil
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs[id] = p
	f.starts++
	return p
}

// kill sends SIGKILL to worker id and waits for it to die.
func (f *fleet) kill(id string) {
	f.t.Helper()
	f.mu.Lock()
	p := f.procs[id]
	delete(f.procs, id)
	f.mu.Unlock()
	p.signal(f.t, syscall.SIGKILL)
	p.wait(f.t, 10*time.Second)
}

// submitMany publishes n requests of workflow with ids prefix-0000... and returns them.
func submitMany(h *harness, workflowID, prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.submit(&contract.Request{WorkflowID: workflowID, BotID: "b1", RequestID: fmt.Sprintf("%s-%04d", prefix, i)})
	}
	return ids
}

// assertExactlyOnce checks that every request completed once: one terminal status,
// one execution_completed event and one order intent each, none missing.
func assertExactlyOnce(t *testing.T, h *harness, workflowID string, ids []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, id := range ids {
		st := h.waitStatus(workflowID, id, time.Until(deadline))
		if st.Status != contract.StatusCompleted {
			t.Errorf("%s: %s %+v", id, st.Status, st.Error)
		}
	}
	// The terminal event is published after the terminal status is stored: wait
	// for it too, until the deadline.
	var completed, orders map[string]int
	natstest.WaitFor(t, max(time.Until(deadline), time.Second), func() error {
		completed, orders = map[string]int{}, map[string]int{}
		for _, m := range h.messages(contract.StreamEvents, "flow.events.*."+workflowID+".*.execution_completed") {
			var ev contract.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			completed[ev.ExecutionID]++
		}
		for _, m := range h.messages(contract.StreamOrders, "flow.orders.>") {
			var o contract.OrderIntent
			if err := json.Unmarshal(m.Data(), &o); err != nil {
				t.Fatal(err)
			}
			if o.WorkflowID == workflowID {
				orders[o.ExecutionID]++
			}
		}
		for _, id := range ids {
			if completed[id] == 0 || orders[id] == 0 {
				return fmt.Errorf("%s: no execution_completed event or order intent yet", id)
			}
		}
		return nil
	})
	bad := 0
	for _, id := range ids {
		if completed[id] != 1 || orders[id] != 1 {
			bad++
			if bad <= 10 {
				t.Errorf("%s: %d execution_completed events and %d order intents, want 1 and 1", id, completed[id], orders[id])
			}
		}
	}
	if len(completed) != len(ids) || len(orders) != len(ids) {
		t.Errorf("%d executions completed and %d ordered, want %d", len(completed), len(orders), len(ids))
	}
}

// runningOn returns the executions of ids whose status says they run on worker.
func runningOn(h *harness, workflowID string, ids []string, worker string) []string {
	var out []string
	for _, id := range ids {
		st, err := h.client.Status(h.ctx, workflowID, id)
		if err == nil && st.Status == contract.StatusRunning && st.WorkerID == worker {
			out = append(out, id)
		}
	}
	return out
}

func TestSIGKILLedWorkersLoseNothingAndOrderOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	f := newFleet(t, h.srv.URL(), "--concurrency", "16")
	names := []string{"w1", "w2", "w3"}
	for _, n := range names {
		f.start(n)
	}
	h.deploy(fmt.Sprintf(crashWorkflow, "500ms"))
	ids := submitMany(h, "crash", "k", 1000)

	type kill struct {
		at       time.Time
		inFlight []string
	}
	var kills []kill
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 3 {
		// Let work flow, then kill a random worker at a random moment: this sleep is
		// the chaos schedule, not a wait for a condition.
		time.Sleep(time.Duration(1000+rng.IntN(1000)) * time.Millisecond)
		victim := rng.IntN(len(names))
		name := names[victim]
		f.kill(name)
		k := kill{at: time.Now(), inFlight: runningOn(h, "crash", ids, name)}
		kills = append(kills, k)
		t.Logf("round %d: killed %s with %d executions in flight", round+1, name, len(k.inFlight))
		names[victim] = fmt.Sprintf("%s-r%d", strings.Split(name, "-")[0], round+1)
		f.start(names[victim])
	}
	assertExactlyOnce(t, h, "crash", ids, 3*time.Minute)

	// Time to recover: from a SIGKILL to the last of its executions resumed elsewhere.
	for i, k := range kills {
		var last time.Time
		for _, id := range k.inFlight {
			for _, ev := range h.events("crash", id) {
				if ev.Type == contract.ExecutionStarted && ev.Resumed && ev.Time.After(k.at) {
					if ev.Time.After(last) {
						last = ev.Time
					}
					break
				}
			}
		}
		if !last.IsZero() {
			t.Logf("kill %d: %d executions resumed within %s (ack wait %s)", i+1, len(k.inFlight), last.Sub(k.at).Round(time.Millisecond), processAckWait)
		}
	}
}

func TestServerRestartMidRunLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	f := newFleet(t, h.srv.URL(), "--concurrency", "16")
	for _, n := range []string{"w1", "w2", "w3"} {
		f.start(n)
	}
	h.deploy(fmt.Sprintf(crashWorkflow, "1s"))
	ids := submitMany(h, "crash", "r", 300)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if n := len(h.messages(contract.StreamOrders, "flow.orders.>")); n < 50 {
			return fmt.Errorf("%d orders so far", n)
		}
		return nil
	})
	h.srv.Restart(t) // same port, same store directory
	assertExactlyOnce(t, h, "crash", ids, 3*time.Minute)
}

func TestSIGTERMHandsUnfinishedWorkToOtherWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	f := newFleet(t, h.srv.URL(), "--concurrency", "8", "--shutdown-grace", "1s")
	leaving := f.start("leaving")
	f.start("w2")
	f.start("w3")
	// Nodes far longer than the grace, so that the leaving worker's executions are
	// still running when the grace ends however late the SIGTERM comes on a busy
	// machine; as many requests as the three workers run at once.
	h.deploy(fmt.Sprintf(crashWorkflow, "5s"))
	ids := submitMany(h, "crash", "t", 24)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if n := len(runningOn(h, "crash", ids, "leaving")); n < 8 {
			return fmt.Errorf("%d executions running on the leaving worker", n)
		}
		return nil
	})

	sent := time.Now()
	leaving.signal(t, syscall.SIGTERM)
	if code := leaving.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("worker exited %d on SIGTERM", code)
	}
	t.Logf("worker exited %s after SIGTERM (grace 1s)", time.Since(sent).Round(time.Millisecond))
	if !strings.Contains(leaving.out.String(), "handing back unfinished requests") {
		t.Errorf("the worker did not hand back its unfinished requests:\n%s", leaving.out.String())
	}
	assertExactlyOnce(t, h, "crash", ids, 2*time.Minute)
	finishedElsewhere := 0
	for _, id := range ids {
		if st, err := h.client.Status(h.ctx, "crash", id); err == nil && st.Attempt > 1 && st.WorkerID != "leaving" {
			finishedElsewhere++
		}
	}
	if finishedElsewhere == 0 {
		t.Error("no execution handed back by the leaving worker finished elsewhere")
	}
}

func TestRequestThatAlwaysCrashesItsWorkerIsDeadLettered(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	h := newHarness(t)
	const maxDeliver = 2
	f := newFleet(t, h.srv.URL(), "--max-deliver", fmt.Sprint(maxDeliver))
	name := "w1"
	f.start(name)
	h.deploy(fmt.Sprintf(crashWorkflow, "1m"))
	id := h.submit(&contract.Request{WorkflowID: "crash", BotID: "b1", RequestID: "poison"})

	// Each delivery kills its worker mid-node, as a crashing node would.
	for attempt := 1; attempt <= maxDeliver; attempt++ {
		natstest.WaitFor(t, 30*time.Second, func() error {
			st, err := h.client.Status(h.ctx, "crash", id)
			if err != nil || st.Attempt != attempt || st.Status != contract.StatusRunning {
				return fmt.Errorf("attempt %d not running yet: %+v %v", attempt, st, err)
			}
			return nil
		})
		f.kill(name)
		name = fmt.Sprintf("w1-r%d", attempt)
		f.start(name)
	}

	st := h.waitStatus("crash", id, 30*time.Second)
	if st.Status != contract.StatusFailed || st.Error.Kind != contract.KindMaxDeliveries {
		t.Fatalf("status = %s %+v", st.Status, st.Error)
	}
	var dl *contract.DeadLetter
	for _, l := range h.deadLetters() {
		if l.ExecutionID == id {
			dl = &l
		}
	}
	if dl == nil || dl.Kind != contract.KindMaxDeliveries || dl.LastStatus == nil || dl.LastStatus.Attempt != maxDeliver || dl.Request == nil {
		t.Fatalf("dead letter = %+v", dl)
	}
	failed := h.waitEvent("crash", id, contract.ExecutionFailed, "", 10*time.Second)
	if failed.Error.Kind != contract.KindMaxDeliveries {
		t.Errorf("execution_failed = %+v", failed.Error)
	}
	if orders := h.messages(contract.StreamOrders, "flow.orders.>"); len(orders) != 0 {
		t.Errorf("a poisoned execution placed %d orders", len(orders))
	}
}

// An execution resumed on a version of its workflow that flow_workflows no longer
// keeps is rejected as such, not as a workflow that is not deployed.
func TestResumeOnAPurgedWorkflowVersionSaysSo(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	var first uint64
	for i := range 17 { // the bucket keeps 16 versions: the first is gone
		_, v, err := h.client.Deploy(h.ctx, []byte(strings.Replace(quickWorkflow, `"x": "1"`, fmt.Sprintf(`"x": "%d"`, i), 1)))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = v
		}
	}
	// A worker died running version 1; the request comes back.
	now := time.Now().UTC()
	st := &contract.Status{ExecutionID: "old-1", WorkflowID: "quick", WorkflowVersion: first, RequestID: "old-1",
		Status: contract.StatusRunning, Attempt: 1, WorkerID: "gone", CreatedAt: &now, StartedAt: &now, UpdatedAt: now}
	if _, err := h.store().PutStatus(h.ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(contract.Request{WorkflowID: "quick", RequestID: "old-1"})
	h.publishRaw("flow.exec.quick._", data, nil)
	st = h.waitStatus("quick", "old-1", 10*time.Second)
	if st.Error == nil || st.Error.Kind != contract.KindWorkflowVersionGone {
		t.Fatalf("status %s %+v, want rejected with kind %s", st.Status, st.Error, contract.KindWorkflowVersionGone)
	}
	for _, want := range []string{`"quick"`, fmt.Sprintf("version %d", first), "last 16 versions"} {
		if !strings.Contains(st.Error.Message, want) {
			t.Errorf("message %q does not say %s", st.Error.Message, want)
		}
	}
}
