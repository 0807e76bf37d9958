package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/worker"
	"github.com/flowguard/flowguard/schemas"
)

const twoStepWorkflow = `{
  "id": "two-step",
  "nodes": [
    {"id": "double", "type": "transform", "config": {"outputs": {"x": "inputs.n * 2"}}},
    {"id": "plus_one", "type": "transform", "depends_on": ["double"], "config": {"outputs": {"y": "nodes.double.x + 1"}}}
  ]
}`

func TestExecutionEmitsLifecycleEventsInOrder(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(twoStepWorkflow)

	id := h.submit(&contract.Request{WorkflowID: "two-step", BotID: "b1", StrategyID: "s1", Inputs: map[string]any{"n": 20}})
	st := h.waitStatus("two-step", id, 10*time.Second)
	if st.Status != contract.StatusCompleted {
		t.Fatalf("status = %s (%+v), want completed", st.Status, st.Error)
	}

	evs := h.events("two-step", id)
	want := []string{
		"execution_started",
		"node_started:double", "node_completed:double",
		"node_started:plus_one", "node_completed:plus_one",
		"execution_completed",
	}
	if got := eventTypes(evs); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Errorf("event %d (%s) has seq %d, want %d", i, ev.Type, ev.Seq, i+1)
		}
		if ev.WorkflowID != "two-step" || ev.BotID != "b1" || ev.StrategyID != "s1" || ev.ExecutionID != id {
			t.Errorf("event %s identity = %s/%s/%s/%s", ev.Type, ev.WorkflowID, ev.BotID, ev.StrategyID, ev.ExecutionID)
		}
		data, _ := json.Marshal(ev)
		if err := schemas.ValidateJSON(schemas.Event, data); err != nil {
			t.Errorf("event %s: %v", ev.Type, err)
		}
	}
	if out := evs[4].Outputs; out["y"] != float64(41) {
		t.Errorf("plus_one outputs = %v, want y=41", out)
	}
}

// The request is gone from FLOW_EXEC once acknowledged: execution_started keeps
// its inputs for whoever reads the execution later, and no other event repeats them.
func TestStartedEventCarriesTheRequestsInputs(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(twoStepWorkflow)

	h.publishRaw("flow.exec.two-step.b1", []byte(`{"request_id": "with-inputs", "workflow_id": "two-step", "bot_id": "b1",
		"inputs": {"n": 20, "symbol": "BTCUSDT", "levels": [1, 2], "opts": {"post_only": true}}}`), nil)
	h.publishRaw("flow.exec.two-step.b1", []byte(`{"request_id": "no-inputs", "workflow_id": "two-step", "bot_id": "b1"}`), nil)
	h.waitStatus("two-step", "with-inputs", 10*time.Second)
	h.waitStatus("two-step", "no-inputs", 10*time.Second)

	started := h.waitEvent("two-step", "with-inputs", contract.ExecutionStarted, "", 10*time.Second)
	want := map[string]any{"n": float64(20), "symbol": "BTCUSDT", "levels": []any{float64(1), float64(2)}, "opts": map[string]any{"post_only": true}}
	if got, _ := json.Marshal(started.Inputs); string(got) != mustJSON(t, want) {
		t.Errorf("execution_started inputs = %s, want %s", got, mustJSON(t, want))
	}
	for _, ev := range h.events("two-step", "with-inputs") {
		if ev.Type != contract.ExecutionStarted && ev.Inputs != nil {
			t.Errorf("%s carries inputs %v; only execution_started does", ev.Type, ev.Inputs)
		}
	}
	if ev := h.waitEvent("two-step", "no-inputs", contract.ExecutionStarted, "", 10*time.Second); ev.Inputs != nil {
		t.Errorf("execution_started of a request without inputs carries %v", ev.Inputs)
	}
	raw := h.messages(contract.StreamEvents, "flow.events.b1.two-step.with-inputs.execution_started")
	if len(raw) != 1 {
		t.Fatalf("%d execution_started messages, want 1", len(raw))
	}
	if err := schemas.ValidateJSON(schemas.Event, raw[0].Data()); err != nil {
		t.Errorf("execution_started with inputs: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestCorrelationIDOnEveryEventAndHeader(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(twoStepWorkflow)

	generated := h.submit(&contract.Request{WorkflowID: "two-step", Inputs: map[string]any{"n": 1}})
	own := h.submit(&contract.Request{WorkflowID: "two-step", CorrelationID: "my-trace-42", Inputs: map[string]any{"n": 1}})
	h.waitStatus("two-step", generated, 10*time.Second)
	h.waitStatus("two-step", own, 10*time.Second)

	pattern := regexp.MustCompile(`^exec_two-step_[A-Za-z0-9_-]+$`)
	for _, tc := range []struct {
		exec  string
		check func(string) bool
	}{
		{generated, pattern.MatchString},
		{own, func(c string) bool { return c == "my-trace-42" }},
	} {
		msgs := h.messages(contract.StreamEvents, "flow.events.*.two-step."+tc.exec+".*")
		if len(msgs) == 0 {
			t.Fatalf("no events for %s", tc.exec)
		}
		first := ""
		for _, m := range msgs {
			var ev contract.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.ContractVersion != contract.Version {
				t.Errorf("%s %s: contract_version %q, want %q", tc.exec, ev.Type, ev.ContractVersion, contract.Version)
			}
			header := m.Headers().Get(contract.HeaderCorrelationID)
			if !tc.check(ev.CorrelationID) || header != ev.CorrelationID {
				t.Errorf("%s %s: correlation_id %q, header %q", tc.exec, ev.Type, ev.CorrelationID, header)
			}
			if first == "" {
				first = ev.CorrelationID
			} else if ev.CorrelationID != first {
				t.Errorf("%s: correlation id changed from %q to %q", tc.exec, first, ev.CorrelationID)
			}
		}
		st, err := h.client.Status(h.ctx, "two-step", tc.exec)
		if err != nil || st.CorrelationID != first {
			t.Errorf("status correlation id = %v (%v), want %q", st, err, first)
		}
	}
}

func TestStateKeysHoldStatusLatestAndResult(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(twoStepWorkflow)

	first := h.submit(&contract.Request{WorkflowID: "two-step", BotID: "b1", Inputs: map[string]any{"n": 1}})
	h.waitStatus("two-step", first, 10*time.Second)
	id := h.submit(&contract.Request{WorkflowID: "two-step", BotID: "b1", Inputs: map[string]any{"n": 5}})
	h.waitStatus("two-step", id, 10*time.Second)

	kv := h.stateKV()
	get := func(key, schema string) []byte {
		t.Helper()
		e, err := kv.Get(h.ctx, key)
		if err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
		if schema != "" {
			if err := schemas.ValidateJSON(schema, e.Value()); err != nil {
				t.Errorf("key %s: %v", key, err)
			}
		}
		return e.Value()
	}
	var st contract.Status
	if err := json.Unmarshal(get("workflow.two-step.execution."+id+".status", schemas.Status), &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != contract.StatusCompleted || st.Attempt != 1 || st.WorkerID != "w1" || st.StartedAt == nil || st.FinishedAt == nil || st.WorkflowVersion == 0 {
		t.Errorf("status = %+v", st)
	}
	if latest := string(get("workflow.two-step.latest_execution", "")); latest != id {
		t.Errorf("latest_execution = %q, want %q", latest, id)
	}
	var res contract.Result
	if err := json.Unmarshal(get("workflow.two-step.execution."+id+".result", schemas.Result), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusCompleted || res.Outputs["plus_one"]["y"] != float64(11) {
		t.Errorf("result = %+v", res)
	}
	// Transform nodes keep no checkpoint once the execution has ended: the result
	// supersedes them. A node that is not pure (a delay) keeps one.
	for _, node := range []string{"double", "plus_one"} {
		if _, err := kv.Get(h.ctx, "workflow.two-step.execution."+id+".node."+node); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("checkpoint of transform node %s: %v, want none", node, err)
		}
	}
	h.deploy(`{"id": "pause", "nodes": [
	  {"id": "double", "type": "transform", "config": {"outputs": {"x": "inputs.n * 2"}}},
	  {"id": "wait", "type": "delay", "depends_on": ["double"], "config": {"duration": "1ms"}}]}`)
	paused := h.submit(&contract.Request{WorkflowID: "pause", Inputs: map[string]any{"n": 5}})
	h.waitStatus("pause", paused, 10*time.Second)
	for _, node := range []string{"double", "wait"} {
		get("workflow.pause.execution."+paused+".node."+node, schemas.Checkpoint)
	}
}

func TestIndependentNodesOverlap(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", nil)
	h.deploy(`{"id": "fan-out", "nodes": [
		{"id": "a", "type": "delay", "config": {"duration": "300ms"}},
		{"id": "b", "type": "delay", "config": {"duration": "300ms"}},
		{"id": "c", "type": "delay", "config": {"duration": "300ms"}}
	]}`)
	id := h.submit(&contract.Request{WorkflowID: "fan-out"})
	h.waitStatus("fan-out", id, 10*time.Second)

	firstCompleted := -1
	var started []int
	for i, ev := range h.events("fan-out", id) {
		switch ev.Type {
		case contract.NodeStarted:
			started = append(started, i)
		case contract.NodeCompleted:
			if firstCompleted < 0 {
				firstCompleted = i
			}
		}
	}
	if len(started) != 3 || firstCompleted < 0 {
		t.Fatalf("started at %v, first completion at %d", started, firstCompleted)
	}
	for _, s := range started {
		if s > firstCompleted {
			t.Errorf("a node started (event %d) after another completed (event %d): nodes did not overlap", s, firstCompleted)
		}
	}
}

func TestTwoWorkersShareRequestsEachExecutedOnce(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) { c.Consumer.Concurrency = 8 })
	h.startWorker("w2", func(c *worker.Config) { c.Consumer.Concurrency = 8 })
	h.deploy(twoStepWorkflow)

	const n = 200
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.submit(&contract.Request{WorkflowID: "two-step", RequestID: fmt.Sprintf("req-%03d", i), Inputs: map[string]any{"n": i}})
	}
	// Republishing a request id inside the duplicate window is stored once.
	h.submit(&contract.Request{WorkflowID: "two-step", RequestID: "req-000", Inputs: map[string]any{"n": 0}})

	workers := map[string]int{}
	for _, id := range ids {
		st := h.waitStatus("two-step", id, 30*time.Second)
		if st.Status != contract.StatusCompleted {
			t.Errorf("%s: status %s", id, st.Status)
		}
		workers[st.WorkerID]++
	}
	if workers["w1"] == 0 || workers["w2"] == 0 {
		t.Errorf("work was not shared: %v", workers)
	}
	completed := map[string]int{}
	for _, m := range h.messages(contract.StreamEvents, "flow.events.*.two-step.*.execution_completed") {
		var ev contract.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		completed[ev.ExecutionID]++
	}
	for _, id := range ids {
		if completed[id] != 1 {
			t.Errorf("%s has %d execution_completed events, want 1", id, completed[id])
		}
	}
	if len(completed) != n {
		t.Errorf("%d executions completed, want %d", len(completed), n)
	}
}

func TestBadInputIsDeadLetteredAndTheWorkerGoesOn(t *testing.T) {
	h := newHarness(t)
	h.startWorker("w1", func(c *worker.Config) { c.MaxRequestBytes, c.Inline.Enabled = 2048, true })
	h.deploy(twoStepWorkflow)

	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	cases := []struct {
		name, subject, body, kind string
	}{
		{"malformed JSON", "flow.exec.two-step._", `{"workflow_id": "two-step",`, contract.KindInvalidRequest},
		{"schema violation", "flow.exec.two-step._", `{"workflow_id": "two-step", "bot_id": "no spaces allowed"}`, contract.KindInvalidRequest},
		{"subject mismatch", "flow.exec.two-step._", `{"workflow_id": "other"}`, contract.KindInvalidRequest},
		{"bot mismatch", "flow.exec.two-step.b1", `{"workflow_id": "two-step", "bot_id": "b2"}`, contract.KindInvalidRequest},
		{"subject without a bot token", "flow.exec.two-step", `{"workflow_id": "two-step"}`, contract.KindInvalidRequest},
		{"unknown workflow", "flow.exec.missing._", `{"workflow_id": "missing"}`, contract.KindUnknownWorkflow},
		{"invalid inline workflow", "flow.exec.inline._", `{"workflow_id": "inline", "workflow": {"id": "inline", "nodes": [{"id": "a", "type": "transform", "depends_on": ["a"], "config": {"outputs": {"x": "1"}}}]}}`, contract.KindInvalidWorkflow},
		{"oversized", "flow.exec.two-step._", `{"workflow_id": "two-step", "inputs": {"blob": "` + strings.Repeat("x", 4096) + `"}}`, contract.KindOversized},
		{"stale", "flow.exec.two-step._", `{"workflow_id": "two-step", "not_after": "` + past + `"}`, contract.KindStale},
	}
	seqs := map[uint64]int{} // stream sequence -> case
	for i, tc := range cases {
		seqs[h.publishRaw(tc.subject, []byte(tc.body), nats.Header{})] = i
	}
	// The worker goes on: a good request after the bad ones completes.
	good := h.submit(&contract.Request{WorkflowID: "two-step", Inputs: map[string]any{"n": 1}})
	if st := h.waitStatus("two-step", good, 10*time.Second); st.Status != contract.StatusCompleted {
		t.Fatalf("good request: %s", st.Status)
	}

	var letters []contract.DeadLetter
	natstest.WaitFor(t, 10*time.Second, func() error {
		letters = h.deadLetters()
		if len(letters) < len(cases) {
			return fmt.Errorf("%d dead letters, want %d", len(letters), len(cases))
		}
		return nil
	})
	bySeq := map[uint64]contract.DeadLetter{}
	for _, dl := range letters {
		bySeq[dl.StreamSeq] = dl
	}
	for seq, i := range seqs {
		tc, name := cases[i], cases[i].name
		dl, ok := bySeq[seq]
		if !ok {
			t.Errorf("%s: no dead letter", name)
			continue
		}
		if dl.Kind != tc.kind || dl.Reason == "" || dl.Subject != tc.subject {
			t.Errorf("%s: dead letter kind %q reason %q subject %q, want kind %q", name, dl.Kind, dl.Reason, dl.Subject, tc.kind)
		}
		if dl.Request == nil && dl.Payload == "" {
			t.Errorf("%s: dead letter lost the request", name)
		}
		// Every rejection also has an execution_rejected event with the same reason.
		rejected := h.messages(contract.StreamEvents, "flow.events.*.*."+dl.ExecutionID+".execution_rejected")
		if len(rejected) != 1 {
			t.Errorf("%s: %d execution_rejected events for %s, want 1", name, len(rejected), dl.ExecutionID)
			continue
		}
		var ev contract.Event
		_ = json.Unmarshal(rejected[0].Data(), &ev)
		if ev.Error == nil || ev.Error.Kind != tc.kind {
			t.Errorf("%s: execution_rejected error = %+v", name, ev.Error)
		}
	}
	// Nothing is left to redeliver: every request was acknowledged.
	h.waitAllAcked(5 * time.Second)
}
