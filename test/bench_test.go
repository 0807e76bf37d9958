package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/worker"
)

const benchWorkflow = `{"id": "bench3", "nodes": [
  {"id": "a", "type": "transform", "config": {"outputs": {"x": "inputs.n + 1"}}},
  {"id": "b", "type": "transform", "depends_on": ["a"], "config": {"outputs": {"x": "nodes.a.x * 2"}}},
  {"id": "c", "type": "transform", "depends_on": ["b"], "config": {"outputs": {"x": "nodes.b.x - 1"}}}
]}`

// BenchmarkEndToEnd runs a 3-node transform workflow on one worker against an
// embedded server, measuring the latency from publishing a request to receiving its
// execution_completed event. "latency" sends one request at a time (the latency of
// an idle system); "burst-cN" publishes all requests at once to a worker of
// concurrency N (throughput; latencies then include queueing).
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("latency", func(b *testing.B) { benchEndToEnd(b, &server.Options{}, 1, true) })
	for _, concurrency := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("burst-c%d", concurrency), func(b *testing.B) { benchEndToEnd(b, &server.Options{}, concurrency, false) })
	}
}

// BenchmarkSyncInterval is BenchmarkEndToEnd's burst and latency runs on a server
// that fsyncs every 2 minutes (the default) and on one that fsyncs every write
// before acknowledging it (sync_interval: always, the worker's --sync-always), side
// by side: the price of durability on this machine's disk.
func BenchmarkSyncInterval(b *testing.B) {
	for _, sync := range []struct {
		name string
		opts func() *server.Options
	}{
		{"default", func() *server.Options { return &server.Options{} }},
		{"always", func() *server.Options { return &server.Options{SyncAlways: true} }},
	} {
		b.Run("burst-c64/sync-"+sync.name, func(b *testing.B) { benchEndToEnd(b, sync.opts(), 64, false) })
		b.Run("latency/sync-"+sync.name, func(b *testing.B) { benchEndToEnd(b, sync.opts(), 1, true) })
	}
}

func benchEndToEnd(b *testing.B, opts *server.Options, concurrency int, oneAtATime bool) {
	h := newHarnessWith(b, opts)
	h.startWorker("bench", func(c *worker.Config) { c.Consumer.Concurrency = concurrency })
	h.deploy(benchWorkflow)

	var mu sync.Mutex
	sent := make(map[string]time.Time, b.N)
	latencies := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	each := make(chan struct{}, 1) // one execution completed
	sub, err := h.nc.Subscribe("flow.events.*.bench3.*.execution_completed", func(m *nats.Msg) {
		var ev contract.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if t0, ok := sent[ev.ExecutionID]; ok {
			latencies = append(latencies, time.Since(t0))
			delete(sent, ev.ExecutionID)
			select {
			case each <- struct{}{}:
			default:
			}
			if len(latencies) == b.N {
				close(done)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()

	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		id := fmt.Sprintf("b%d-%d", concurrency, i)
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		h.submit(&contract.Request{WorkflowID: "bench3", RequestID: id, Inputs: map[string]any{"n": i}})
		if oneAtATime {
			<-each
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d executions completed", len(latencies), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "exec/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkHaltPropagation measures, with 3 workers and 300 executions in flight,
// the time from publishing a halt until it is in force on each worker (applied,
// every covered execution cancelled: the applied_at it reports), and to each
// execution's running node reporting its interruption (the time of its
// node_failed event). Each iteration resumes, starts 300 executions, halts and
// waits for all of them.
func BenchmarkHaltPropagation(b *testing.B) {
	const inFlight = 300
	h := newHarness(b)
	for i := range 3 {
		h.startWorker(fmt.Sprintf("w%d", i+1), func(c *worker.Config) { c.Consumer.Concurrency = inFlight / 3 })
	}
	h.deploy(longWorkflow)

	var mu sync.Mutex
	started, interrupted := 0, []time.Time{}
	sub, err := h.nc.Subscribe("flow.events.*.long.*.*", func(m *nats.Msg) {
		var ev contract.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Type == contract.NodeStarted:
			started++
		case ev.Type == contract.NodeFailed && ev.Error != nil && ev.Error.Kind == contract.KindHalted:
			interrupted = append(interrupted, ev.Time)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	waitCount := func(what string, count func() int) {
		natstest.WaitFor(b, time.Minute, func() error {
			mu.Lock()
			defer mu.Unlock()
			if n := count(); n < inFlight {
				return fmt.Errorf("%d of %d executions %s", n, inFlight, what)
			}
			return nil
		})
	}

	var delays, lasts, inForce []time.Duration
	b.ResetTimer()
	for i := range b.N {
		h.command("global", "resume", "next round")
		mu.Lock()
		started, interrupted = 0, interrupted[:0]
		mu.Unlock()
		for j := range inFlight {
			h.submit(&contract.Request{WorkflowID: "long", RequestID: fmt.Sprintf("halt-%d-%d", i, j)})
		}
		waitCount("started", func() int { return started })
		t0 := time.Now()
		h.command("global", "halt", "benchmark")
		waitCount("interrupted", func() int { return len(interrupted) })
		var last time.Duration
		for _, at := range interrupted {
			d := at.Sub(t0)
			delays = append(delays, d)
			last = max(last, d)
		}
		lasts = append(lasts, last)
		for _, st := range h.workerStates("global") {
			inForce = append(inForce, st.AppliedAt.Sub(t0))
		}
	}
	b.StopTimer()
	slices.Sort(delays)
	slices.Sort(lasts)
	slices.Sort(inForce)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(inForce[len(inForce)/2]), "in-force-p50-ms")
	b.ReportMetric(ms(inForce[len(inForce)*99/100]), "in-force-p99-ms")
	b.ReportMetric(ms(delays[len(delays)/2]), "p50-ms")
	b.ReportMetric(ms(delays[len(delays)*99/100]), "p99-ms")
	b.ReportMetric(ms(lasts[len(lasts)-1]), "max-ms")
	b.ReportMetric(ms(lasts[len(lasts)/2]), "last-p50-ms")
}
