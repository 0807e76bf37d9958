package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
)

// chainWorkflow is a workflow of n transform nodes, each after the previous one.
func chainWorkflow(id string, n int) string {
	nodes := make([]string, n)
	for i := range n {
		dep := ""
		expr := "inputs.n + 1"
		if i > 0 {
			dep = fmt.Sprintf(`, "depends_on": ["n%d"]`, i-1)
			expr = fmt.Sprintf("nodes.n%d.x + 1", i-1)
		}
		nodes[i] = fmt.Sprintf(`{"id": "n%d", "type": "transform"%s, "config": {"outputs": {"x": %q}}}`, i, dep, expr)
	}
	return fmt.Sprintf(`{"id": %q, "nodes": [%s]}`, id, strings.Join(nodes, ","))
}

// sweepPoint measures one workflow size at one worker concurrency, keeping as many
// requests outstanding as the worker runs at once, then the raw ceiling.
func (e *env) sweepPoint(ctx context.Context, nodes, concurrency int) (*Point, error) {
	wf := fmt.Sprintf("bench-n%d", nodes)
	stop, err := e.startWorker(ctx, "bench", concurrency)
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, _, err := e.client.Deploy(ctx, []byte(chainWorkflow(wf, nodes))); err != nil {
		return nil, err
	}
	done, err := e.watchCompletions(fmt.Sprintf("flow.events.*.%s.*.%s", wf, contract.ExecutionCompleted))
	if err != nil {
		return nil, err
	}
	defer done.stop()

	n := e.cfg.Requests
	step := fmt.Sprintf("flowguard %d nodes, concurrency %d", nodes, concurrency)
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	sent := make([]time.Time, n)
	ids := make([]string, n)
	start := time.Now()
	for i := range n {
		// Keep at most concurrency requests outstanding.
		for i-done.count() >= concurrency {
			if err := done.waitCount(ctx, i-concurrency+1, time.Minute); err != nil {
				return nil, err
			}
		}
		ids[i] = fmt.Sprintf("b%s-%d-%d-%d", run, nodes, concurrency, i)
		sent[i] = time.Now()
		if _, err := e.client.Submit(ctx, &contract.Request{WorkflowID: wf, RequestID: ids[i], Inputs: map[string]any{"n": i}}); err != nil {
			return nil, err
		}
		if i%50 == 0 {
			e.cfg.Progress(step, done.count(), n)
		}
	}
	if err := done.waitCount(ctx, n, 2*time.Minute); err != nil {
		return nil, err
	}
	var last time.Time
	latencies := make([]time.Duration, n)
	for i, id := range ids {
		at, _ := done.get(id)
		latencies[i] = at.Sub(sent[i])
		if at.After(last) {
			last = at
		}
	}
	e.cfg.Progress(step, n, n)
	sortDurations(latencies)
	p := &Point{
		Nodes: nodes, Concurrency: concurrency, Requests: n,
		ExecPerSec: float64(n) / last.Sub(start).Seconds(),
		P50MS:      percentile(latencies, 0.5), P99MS: percentile(latencies, 0.99), P999MS: percentile(latencies, 0.999),
	}
	if p.RawExecPerSec, err = e.raw(ctx, nodes, concurrency, n); err != nil {
		return nil, fmt.Errorf("raw ceiling: %w", err)
	}
	p.Ratio = p.ExecPerSec / p.RawExecPerSec
	return p, nil
}

// raw performs, with plain JetStream calls and the same concurrency, the JetStream
// operations one execution of an n-node workflow needed under contract version 3:
// publish, fetch and ack the request; read the status (the dedupe check); write
// the status, the latest execution, a checkpoint per node (version 4 writes none
// for transform nodes), the result and the final status; publish the 2n+2 events.
// It returns executions' worth of operations per second: the ceiling flowguard
// could reach if it did nothing else, those checkpoints aside.
func (e *env) raw(ctx context.Context, nodes, concurrency, total int) (float64, error) {
	suffix := fmt.Sprintf("%d_%d", nodes, concurrency)
	reqStream, evStream, stateBucket := "BENCH_RAW_REQ_"+suffix, "BENCH_RAW_EV_"+suffix, "bench_raw_state_"+suffix
	reqSubject, evSubject := "bench.raw.req."+suffix, "bench.raw.ev."+suffix
	s, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: reqStream, Subjects: []string{reqSubject}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		return 0, err
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: evStream, Subjects: []string{evSubject + ".>"}}); err != nil {
		return 0, err
	}
	state, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: stateBucket})
	if err != nil {
		return 0, err
	}
	defer func() {
		cleanup := context.WithoutCancel(ctx)
		_ = e.js.DeleteStream(cleanup, reqStream)
		_ = e.js.DeleteStream(cleanup, evStream)
		_ = e.js.DeleteKeyValue(cleanup, stateBucket)
	}()
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return 0, err
	}
	payload, _ := json.Marshal(contract.Event{Type: contract.NodeCompleted, ExecutionID: "x", Outputs: map[string]any{"x": 1}})

	step := fmt.Sprintf("raw JetStream %d nodes, concurrency %d", nodes, concurrency)
	return closedLoop(total, concurrency, step, e.cfg.Progress, func(i int) error {
		return rawExecution(ctx, e.js, cons, state, reqSubject, evSubject, i, nodes, payload)
	})
}

// closedLoop runs do for 0 to total-1 from concurrency goroutines, each taking the
// next index as soon as it is done with one, and returns the rate of calls per
// second; the first error stops its goroutine and is returned.
func closedLoop(total, concurrency int, step string, progress func(string, int, int), do func(i int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				if err := do(i); err != nil {
					errs <- err
					return
				}
				if i%50 == 0 {
					progress(step, i, total)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	progress(step, total, total)
	return float64(total) / elapsed.Seconds(), nil
}

func rawExecution(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, state jetstream.KeyValue, reqSubject, evSubject string, i, nodes int, payload []byte) error {
	id := fmt.Sprintf("x%d", i)
	msg := nats.NewMsg(reqSubject)
	msg.Data = payload
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return err
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return err
	}
	var req jetstream.Msg
	for m := range batch.Messages() {
		req = m
	}
	if req == nil {
		return fmt.Errorf("fetch: %v", batch.Error())
	}
	if _, err := state.Get(ctx, id+".status"); err == nil {
		return fmt.Errorf("status %s exists", id)
	}
	rev, err := state.Create(ctx, id+".status", payload)
	if err != nil {
		return err
	}
	if _, err := state.Put(ctx, "latest", []byte(id)); err != nil {
		return err
	}
	for seq := 1; seq <= 2*nodes+2; seq++ {
		ev := nats.NewMsg(evSubject + "." + id)
		ev.Data = payload
		ev.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%d", id, seq))
		if _, err := js.PublishMsg(ctx, ev); err != nil {
			return err
		}
		if seq%2 == 1 && seq > 1 && seq < 2*nodes+2 { // after each node_completed
			if _, err := state.Put(ctx, fmt.Sprintf("%s.node.%d", id, seq), payload); err != nil {
				return err
			}
		}
	}
	if _, err := state.Put(ctx, id+".result", payload); err != nil {
		return err
	}
	if _, err := state.Update(ctx, id+".status", payload, rev); err != nil {
		return err
	}
	return req.DoubleAck(ctx)
}
