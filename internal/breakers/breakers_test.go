package breakers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/resilience"
)

// board records what a Sync asks of the breakers.
type board struct {
	mu     sync.Mutex
	forced map[string]*resilience.Hold
	follow map[string]*resilience.Hold
	resets []string
}

func newBoard() *board {
	return &board{forced: map[string]*resilience.Hold{}, follow: map[string]*resilience.Hold{}}
}

func (b *board) Force(p string, h *resilience.Hold) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forced[p] = h
}

func (b *board) Follow(p string, h *resilience.Hold) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.follow[p] = h
}

func (b *board) Reset(p string) resilience.State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resets = append(b.resets, p)
	return resilience.StateOpen
}

// holds returns the current holds, under the lock.
func (b *board) holds(p string) (forced, follow *resilience.Hold, resets int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.forced[p], b.follow[p], len(b.resets)
}

type fixture struct {
	t     *testing.T
	nc    *nats.Conn
	kv    jetstream.KeyValue
	board *board
	sync  *Sync

	mu   sync.Mutex
	msgs []contract.BreakerState
}

func start(t *testing.T, scope string, before func(f *fixture)) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: contract.BucketBreakers})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, nc: nc, kv: kv, board: newBoard()}
	sub, err := nc.Subscribe("flow.breakers.>", func(m *nats.Msg) {
		var st contract.BreakerState
		_ = json.Unmarshal(m.Data, &st)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.msgs = append(f.msgs, st)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if before != nil {
		before(f)
	}
	f.sync = New(kv, nc, Config{WorkerID: "w1", Scope: scope, Subjects: contract.Subjects{Prefix: "flow"}, OpenTime: time.Minute}, zerolog.Nop())
	w, err := f.sync.Watch(ctx, f.board)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); f.sync.Run(ctx, w) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fixture) put(key string, v any) {
	f.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.kv.Put(context.Background(), key, data); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) messages() []contract.BreakerState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]contract.BreakerState(nil), f.msgs...)
}

func TestOrdersAreObeyedAtStartAndLive(t *testing.T) {
	f := start(t, contract.BreakerScopeLocal, func(f *fixture) {
		f.put(contract.BreakerOverrideKey("binance"), contract.BreakerOverride{Provider: "binance", Action: "open", Reason: "maintenance", IssuedBy: "ops"})
	})
	// Applied before Watch returned, and not reported: it is not news.
	if forced, _, _ := f.board.holds("binance"); forced == nil || !strings.Contains(forced.Why, "maintenance") || !forced.Until.IsZero() {
		t.Fatalf("order at start not applied: %+v", forced)
	}

	f.put(contract.BreakerOverrideKey("binance"), contract.BreakerOverride{Provider: "binance", Action: "close", Reason: "done"})
	natstest.WaitFor(t, 5*time.Second, func() error {
		if forced, _, resets := f.board.holds("binance"); forced != nil || resets != 1 {
			return fmt.Errorf("after close: forced %+v, %d resets", forced, resets)
		}
		return nil
	})
	until := time.Now().Add(time.Hour).UTC()
	f.put(contract.BreakerOverrideKey("kraken"), contract.BreakerOverride{Provider: "kraken", Action: "open", Reason: "window", Until: &until})
	natstest.WaitFor(t, 5*time.Second, func() error {
		if forced, _, _ := f.board.holds("kraken"); forced == nil || !forced.Until.Equal(until) {
			return fmt.Errorf("timed order: %+v", forced)
		}
		return nil
	})
	if err := f.kv.Delete(context.Background(), contract.BreakerOverrideKey("kraken")); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if forced, _, _ := f.board.holds("kraken"); forced != nil {
			return fmt.Errorf("deleted order still held: %+v", forced)
		}
		return nil
	})
	// The reports reach the subscription asynchronously: wait for them.
	natstest.WaitFor(t, 5*time.Second, func() error {
		msgs := f.messages()
		if len(msgs) != 2 || msgs[0].State != contract.BreakerClosed || msgs[0].Previous != "open" || msgs[0].Source != contract.BreakerSourceOperator ||
			msgs[1].State != contract.BreakerOpen || msgs[1].OpenUntil == nil || msgs[1].Reason != "window" {
			return fmt.Errorf("messages %+v; want the live close and open, reported by w1", msgs)
		}
		return nil
	})
}

func TestInvalidEntriesAreIgnored(t *testing.T) {
	f := start(t, contract.BreakerScopeCluster, func(f *fixture) {
		for _, key := range []string{contract.BreakerOverrideKey("a"), contract.BreakerStateKey("a"), "unrelated.key"} {
			if _, err := f.kv.Put(context.Background(), key, []byte("not json")); err != nil {
				t.Fatal(err)
			}
		}
		f.put(contract.BreakerOverrideKey("b"), contract.BreakerOverride{Provider: "b", Action: "explode"})
	})
	forcedA, followA, resets := f.board.holds("a")
	forcedB, _, _ := f.board.holds("b")
	if forcedA != nil || followA != nil || forcedB != nil || resets != 0 {
		t.Errorf("invalid entries were applied: %+v %+v %+v %d", forcedA, followA, forcedB, resets)
	}
}

func TestClusterScopeFollowsTheOtherWorkers(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC()
	past := time.Now().Add(-time.Minute).UTC()
	for _, tc := range []struct {
		name  string
		scope string
		state contract.BreakerState
		held  bool
	}{
		{"open elsewhere", contract.BreakerScopeCluster, contract.BreakerState{State: "open", WorkerID: "w2", OpenUntil: &future, Reason: "HTTP 503"}, true},
		{"half-open elsewhere", contract.BreakerScopeCluster, contract.BreakerState{State: "half_open", WorkerID: "w2", OpenUntil: &future}, true},
		{"open here", contract.BreakerScopeCluster, contract.BreakerState{State: "open", WorkerID: "w1", OpenUntil: &future}, false},
		{"open, expired", contract.BreakerScopeCluster, contract.BreakerState{State: "open", WorkerID: "w2", OpenUntil: &past}, false},
		{"closed elsewhere", contract.BreakerScopeCluster, contract.BreakerState{State: "closed", WorkerID: "w2"}, false},
		{"local scope", contract.BreakerScopeLocal, contract.BreakerState{State: "open", WorkerID: "w2", OpenUntil: &future}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.state.Provider = "binance"
			f := start(t, tc.scope, func(f *fixture) { f.put(contract.BreakerStateKey("binance"), tc.state) })
			_, follow, _ := f.board.holds("binance")
			if held := follow != nil && follow.Until.After(time.Now()); held != tc.held {
				t.Fatalf("hold %+v, want held %v", follow, tc.held)
			}
			if tc.held && (!strings.Contains(follow.Why, "w2") || !strings.Contains(follow.Why, "cluster")) {
				t.Errorf("hold says %q; it should name the worker and the scope", follow.Why)
			}
		})
	}
}

func TestChangesArePublishedInOrderAndSharedInClusterScope(t *testing.T) {
	f := start(t, contract.BreakerScopeCluster, nil)
	now := time.Now()
	f.sync.Notify(resilience.StateChange{Provider: "binance", From: resilience.StateClosed, To: resilience.StateOpen, At: now, Until: now.Add(time.Minute), LastError: "HTTP 503"})
	f.sync.Notify(resilience.StateChange{Provider: "binance", From: resilience.StateOpen, To: resilience.StateHalfOpen, At: now.Add(time.Minute)})
	f.sync.Notify(resilience.StateChange{Provider: "binance", From: resilience.StateHalfOpen, To: resilience.StateClosed, At: now.Add(time.Minute)})
	natstest.WaitFor(t, 5*time.Second, func() error {
		if n := len(f.messages()); n != 3 {
			return fmt.Errorf("%d messages", n)
		}
		return nil
	})
	msgs := f.messages()
	if msgs[0].State != "open" || msgs[0].Reason != "HTTP 503" || msgs[0].OpenUntil == nil || msgs[0].Scope != "cluster" || msgs[0].WorkerID != "w1" ||
		msgs[1].State != "half_open" || msgs[1].OpenUntil == nil || msgs[2].State != "closed" {
		t.Errorf("messages %+v", msgs)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		e, err := f.kv.Get(context.Background(), contract.BreakerStateKey("binance"))
		if err != nil {
			return err
		}
		var st contract.BreakerState
		if err := json.Unmarshal(e.Value(), &st); err != nil || st.State != "closed" {
			return fmt.Errorf("shared state %s (%v)", e.Value(), err)
		}
		return nil
	})
	// Its own shared state does not hold this worker back.
	if _, follow, _ := f.board.holds("binance"); follow != nil {
		t.Errorf("the worker follows its own state: %+v", follow)
	}
}
