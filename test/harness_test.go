// Package test holds flowguard's integration, process and container tests. The
// integration tests run workers in the test process against a real nats-server
// started on a random port.
package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/worker"
)

// harness is one test's NATS server, client and workers.
type harness struct {
	t      testing.TB
	srv    *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	client *client.Client
	ctx    context.Context
	// workerLogs, when set, receives the logs of the workers the harness starts.
	workerLogs *lockedBuffer
	// running holds the workers the harness runs and has not stopped.
	running *runningWorkers
}

// runningWorkers are the status subjects of the workers a harness runs, by worker
// ID, for the workers that follow the harness's emergency stream.
type runningWorkers struct {
	mu       sync.Mutex
	statuses map[string]string
}

func (r *runningWorkers) set(id, subject string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses[id] = subject
}

func (r *runningWorkers) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.statuses, id)
}

func (r *runningWorkers) list() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.statuses)
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, &server.Options{})
}

// newHarnessWith is newHarness on a server with more options (see natstest.StartWith).
func newHarnessWith(t testing.TB, opts *server.Options) *harness {
	t.Helper()
	srv := natstest.StartWith(t, opts)
	h := harnessOn(t, natstest.Connect(t, srv.URL()))
	h.srv = srv
	return h
}

// harnessOn is a harness that reads and drives a deployment through nc, for
// servers the harness did not start.
func harnessOn(t testing.TB, nc *nats.Conn) *harness {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &harness{t: t, nc: nc, js: js, client: cl, ctx: ctx, running: &runningWorkers{statuses: map[string]string{}}}
}

// on is the harness reporting to t, a subtest of the harness's test.
func (h *harness) on(t testing.TB) *harness {
	c := *h
	c.t = t
	return &c
}

// testLogger logs to the test output when FLOWGUARD_TEST_LOG is set.
func testLogger(t testing.TB) zerolog.Logger {
	if os.Getenv("FLOWGUARD_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
}

// startWorker runs a worker in the test process until the returned stop is called
// (or the test ends) and waits until it consumes.
func (h *harness) startWorker(id string, mutate func(*worker.Config)) (stop func()) {
	_, stop = h.startWorkerObj(id, mutate)
	return stop
}

// startWorkerObj is startWorker, also returning the worker.
func (h *harness) startWorkerObj(id string, mutate func(*worker.Config)) (w *worker.Worker, stop func()) {
	h.t.Helper()
	return h.startWorkerLogging(id, mutate, testLogger(h.t).With().Str("worker", id).Logger())
}

// startWorkerLogging is startWorkerObj with the worker's logger.
func (h *harness) startWorkerLogging(id string, mutate func(*worker.Config), log zerolog.Logger) (w *worker.Worker, stop func()) {
	h.t.Helper()
	// The tests' providers are servers on loopback, which a worker reaches only
	// when its egress allow-list says so.
	cfg := worker.Config{WorkerID: id, EgressAllow: []string{"127.0.0.1"}}
	cfg.NATS.URL = h.srv.URL()
	cfg.Consumer = consumer.Config{ShutdownGrace: 5 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	if h.workerLogs != nil {
		log = zerolog.New(zerolog.MultiLevelWriter(h.workerLogs, log)).With().Timestamp().Str("worker", id).Logger()
	}
	w, err := worker.New(cfg, log)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			h.t.Errorf("worker %s: %v", id, err)
		}
	}()
	natstest.WaitFor(h.t, 10*time.Second, func() error {
		if !w.Ready() {
			return errors.New("worker not ready")
		}
		return nil
	})
	// Workers of another prefix follow another emergency stream than h.command's.
	if cfg.Prefix == "" || cfg.Prefix == contract.DefaultPrefix {
		h.running.set(id, contract.DefaultPrefix+".workers."+id+".status")
	}
	var once sync.Once
	stop = func() { once.Do(func() { h.running.remove(id); cancel(); wg.Wait() }) }
	h.t.Cleanup(stop)
	return w, stop
}

// command publishes an emergency command with the publisher's client and waits
// until every worker the harness runs has applied it: what the test does next
// meets the new state.
func (h *harness) command(scope, action, reason string) {
	h.t.Helper()
	if _, err := h.client.Emergency(h.ctx, scope, contract.EmergencyCommand{Action: action, Reason: reason, IssuedBy: "test"}); err != nil {
		h.t.Fatalf("%s %s: %v", action, scope, err)
	}
	h.waitEmergencyApplied(scope)
}

// waitEmergencyApplied waits until every worker the harness runs reports, on its
// status endpoint, the state of scope that the emergency stream holds: the same
// state set by the same command.
func (h *harness) waitEmergencyApplied(scope string) {
	h.t.Helper()
	natstest.WaitFor(h.t, 30*time.Second, func() error {
		board, err := h.client.Board(h.ctx)
		if err != nil {
			return err
		}
		want := board.Get(scope)
		for id, got := range h.workerStates(scope) {
			if got.State != want.State || got.Seq != want.Seq {
				return fmt.Errorf("worker %s has %s %s from seq %d, the stream %s from seq %d", id, scope, got.State, got.Seq, want.State, want.Seq)
			}
			if got.AppliedAt.IsZero() {
				return fmt.Errorf("worker %s reports %s %s from seq %d without applied_at", id, scope, got.State, got.Seq)
			}
		}
		return nil
	})
}

// workerStates returns each running worker's view of scope, from its status
// endpoint.
func (h *harness) workerStates(scope string) map[string]emergency.ScopeState {
	h.t.Helper()
	out := map[string]emergency.ScopeState{}
	for id, subject := range h.running.list() {
		st, err := h.client.WorkerStatus(h.ctx, subject)
		if err != nil {
			h.t.Fatalf("worker %s: %v", id, err)
		}
		out[id] = st.Emergency.Get(scope)
	}
	return out
}

// waitEvent waits until an execution has an event of type typ (for node nodeID
// when not empty) and returns it.
func (h *harness) waitEvent(workflowID, executionID, typ, nodeID string, within time.Duration) contract.Event {
	h.t.Helper()
	var found contract.Event
	natstest.WaitFor(h.t, within, func() error {
		for _, ev := range h.events(workflowID, executionID) {
			if ev.Type == typ && (nodeID == "" || ev.NodeID == nodeID) {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("no %s %s event for %s yet", typ, nodeID, executionID)
	})
	return found
}

func (h *harness) deploy(def string) {
	h.t.Helper()
	if _, _, err := h.client.Deploy(h.ctx, []byte(def)); err != nil {
		h.t.Fatalf("deploy: %v", err)
	}
}

func (h *harness) submit(req *contract.Request) string {
	h.t.Helper()
	id, err := h.client.Submit(h.ctx, req)
	if err != nil {
		h.t.Fatalf("submit: %v", err)
	}
	return id
}

// publishRaw publishes bytes to a subject of FLOW_EXEC, as any NATS client could.
func (h *harness) publishRaw(subject string, data []byte, header nats.Header) uint64 {
	h.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	for k, v := range header {
		msg.Header[k] = v
	}
	ack, err := h.js.PublishMsg(h.ctx, msg)
	if err != nil {
		h.t.Fatalf("publish to %s: %v", subject, err)
	}
	return ack.Sequence
}

// waitStatus waits until the execution has a terminal status and returns it.
func (h *harness) waitStatus(workflowID, executionID string, within time.Duration) *contract.Status {
	h.t.Helper()
	var st *contract.Status
	natstest.WaitFor(h.t, within, func() error {
		var err error
		st, err = h.client.Status(h.ctx, workflowID, executionID)
		if err != nil {
			return err
		}
		if !contract.IsTerminalStatus(st.Status) {
			return fmt.Errorf("status is %s", st.Status)
		}
		return nil
	})
	return st
}

// messages returns every message of a stream matching filter, oldest first. A read
// that fails (a cluster electing a leader) is made again, for up to 30 s.
func (h *harness) messages(stream, filter string) []jetstream.Msg {
	h.t.Helper()
	var out []jetstream.Msg
	natstest.WaitFor(h.t, 30*time.Second, func() error {
		var err error
		out, err = h.read(stream, filter)
		return err
	})
	return out
}

func (h *harness) read(stream, filter string) ([]jetstream.Msg, error) {
	cons, err := h.js.OrderedConsumer(h.ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := h.js.Stream(h.ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	var out []jetstream.Msg
	if info.CachedInfo().State.Msgs == 0 {
		return nil, nil
	}
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", stream, err)
		}
		var pending uint64
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			meta, _ := m.Metadata()
			pending = meta.NumPending
			n++
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 || pending == 0 {
			return out, nil
		}
	}
}

// events returns the stored events of an execution, in stream order.
func (h *harness) events(workflowID, executionID string) []contract.Event {
	h.t.Helper()
	var evs []contract.Event
	for _, m := range h.messages(contract.StreamEvents, contract.Subjects{Prefix: "flow"}.EventFilter("", workflowID, executionID)) {
		var ev contract.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			h.t.Fatalf("decode event: %v", err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// deadLetters returns every dead letter.
func (h *harness) deadLetters() []contract.DeadLetter {
	h.t.Helper()
	var out []contract.DeadLetter
	for _, m := range h.messages(contract.StreamDLQ, "flow.dlq.>") {
		var dl contract.DeadLetter
		if err := json.Unmarshal(m.Data(), &dl); err != nil {
			h.t.Fatalf("decode dead letter: %v", err)
		}
		out = append(out, dl)
	}
	return out
}

// stateKV opens the flow_state bucket.
func (h *harness) stateKV() jetstream.KeyValue {
	h.t.Helper()
	kv, err := h.js.KeyValue(h.ctx, contract.BucketState)
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

// store opens typed access to the buckets.
func (h *harness) store() *kvstate.Store {
	h.t.Helper()
	wf, err := h.js.KeyValue(h.ctx, contract.BucketWorkflows)
	if err != nil {
		h.t.Fatal(err)
	}
	return kvstate.New(h.stateKV(), wf)
}

func eventTypes(evs []contract.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
		if e.NodeID != "" {
			out[i] += ":" + e.NodeID
		}
	}
	return out
}

// redeliverAfterCrash makes an execution that completed look like one whose worker
// died after node nodeID ran but before its checkpoint and the terminal status
// were written, then delivers its request again, as the server would redeliver it.
func (h *harness) redeliverAfterCrash(req *contract.Request, nodeID string) {
	h.t.Helper()
	store := h.store()
	st, rev, err := store.Status(h.ctx, req.WorkflowID, req.RequestID)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := h.js.Stream(h.ctx, contract.StreamExec)
	if err != nil {
		h.t.Fatal(err)
	}
	// The status names the coming message as its owner, as it names a redelivered one.
	st.Status, st.FinishedAt, st.TerminalEvent = contract.StatusRunning, nil, nil
	st.StreamSeq = info.CachedInfo().State.LastSeq + 1
	if _, err := store.PutStatus(h.ctx, st, rev); err != nil {
		h.t.Fatal(err)
	}
	if err := h.stateKV().Purge(h.ctx, contract.CheckpointKey(req.WorkflowID, req.RequestID, nodeID)); err != nil {
		h.t.Fatal(err)
	}
	data, _ := json.Marshal(req)
	if seq := h.publishRaw(contract.Subjects{Prefix: contract.DefaultPrefix}.Exec(req.WorkflowID, req.BotID), data, nil); seq != st.StreamSeq {
		h.t.Fatalf("request published at %d, expected %d", seq, st.StreamSeq)
	}
}

// waitAllAcked waits until FLOW_EXEC is empty: every request was acknowledged.
func (h *harness) waitAllAcked(within time.Duration) {
	h.t.Helper()
	natstest.WaitFor(h.t, within, func() error {
		info, err := h.js.Stream(h.ctx, contract.StreamExec)
		if err != nil {
			return err
		}
		if n := info.CachedInfo().State.Msgs; n != 0 {
			return fmt.Errorf("%d requests not acknowledged yet", n)
		}
		return nil
	})
}
