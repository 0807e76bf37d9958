package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
)

// narrator prints timestamped lines.
type narrator struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
}

func (n *narrator) say(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.out, "[%5.1fs] %s\n", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

// title prints a scenario's heading.
func (n *narrator) title(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.out, "\n== %s\n", fmt.Sprintf(format, args...))
}

// watcher follows what the deployment publishes (lifecycle events, breaker
// changes, emergency commands), narrates what matters, counts it for the summary,
// and hands each execution's terminal event to whoever waits for it.
type watcher struct {
	n      *narrator
	client *client.Client
	subs   []*nats.Subscription

	mu       sync.Mutex
	waiters  map[string]chan *contract.Event
	outcomes map[string]int // terminal event types
	retries  int
	fastFail int // node attempts refused by an open breaker
	breaker  string
	trips    int // breaker changes to open
	closes   int // breaker changes from half_open to closed
	scopes   map[string]string
	halts    int // halt commands that halted an active scope
	resumes  int
	refused  int // trade executions halted (orders refused)
}

func newWatcher(nc *nats.Conn, cl *client.Client, n *narrator) (*watcher, error) {
	w := &watcher{n: n, client: cl, waiters: map[string]chan *contract.Event{}, outcomes: map[string]int{},
		breaker: contract.BreakerClosed, scopes: map[string]string{}}
	s := cl.Subjects()
	for subject, handle := range map[string]nats.MsgHandler{
		s.EventsAll():    w.onEvent,
		s.BreakersAll():  w.onBreaker,
		s.EmergencyAll(): w.onEmergency,
	} {
		sub, err := nc.Subscribe(subject, handle)
		if err != nil {
			w.stop()
			return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			w.stop()
			return nil, err
		}
		w.subs = append(w.subs, sub)
	}
	return w, nc.Flush()
}

func (w *watcher) stop() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}

// expect registers interest in an execution's terminal event; call it before
// submitting the request.
func (w *watcher) expect(executionID string) chan *contract.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan *contract.Event, 1)
	w.waiters[executionID] = ch
	return ch
}

// wait returns an execution's terminal event. Should the event be missed (a
// request already run, a slow subscriber), the status document has it.
func (w *watcher) wait(ctx context.Context, workflowID, executionID string, ch chan *contract.Event, within time.Duration) (*contract.Event, error) {
	defer func() {
		w.mu.Lock()
		delete(w.waiters, executionID)
		w.mu.Unlock()
	}()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		select {
		case ev := <-ch:
			return ev, nil
		case <-poll.C:
			if st, err := w.client.Status(ctx, workflowID, executionID); err == nil && st.TerminalEvent != nil {
				return st.TerminalEvent, nil
			}
		case <-deadline.C:
			return nil, fmt.Errorf("execution %s of %s did not end within %s; is a worker running?", executionID, workflowID, within)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (w *watcher) onEvent(m *nats.Msg) {
	var ev contract.Event
	if json.Unmarshal(m.Data, &ev) != nil {
		return
	}
	who := fmt.Sprintf("%s %s", ev.BotID, ev.ExecutionID)
	switch ev.Type {
	case contract.NodeRetrying:
		w.mu.Lock()
		w.retries++
		w.mu.Unlock()
		w.n.say("  ↻ %s: node %s retries (attempt %d in %s) after %s", who, ev.NodeID, ev.Attempt, delay(ev.DelayMS), errText(ev.Error))
	case contract.NodeFailed:
		if ev.Error != nil && ev.Error.Kind == "circuit_open" {
			w.mu.Lock()
			w.fastFail++
			w.mu.Unlock()
			w.n.say("  ⚡ %s: node %s failed fast, no call made: %s", who, ev.NodeID, errText(ev.Error))
		} else if ev.Error != nil && ev.Error.Kind != "canceled" {
			w.n.say("  ✗ %s: node %s failed: %s", who, ev.NodeID, errText(ev.Error))
		}
	}
	if !contract.IsTerminalEvent(ev.Type) {
		return
	}
	w.mu.Lock()
	w.outcomes[ev.Type]++
	if ev.Type == contract.ExecutionHalted && ev.WorkflowID == "trade" {
		w.refused++
	}
	ch := w.waiters[ev.ExecutionID]
	w.mu.Unlock()
	if ch != nil {
		select {
		case ch <- &ev:
		default:
		}
	}
}

func (w *watcher) onBreaker(m *nats.Msg) {
	var st contract.BreakerState
	if json.Unmarshal(m.Data, &st) != nil {
		return
	}
	w.mu.Lock()
	if st.State == contract.BreakerOpen && w.breaker != contract.BreakerOpen {
		w.trips++
	}
	if st.State == contract.BreakerClosed && st.Previous == contract.BreakerHalfOpen {
		w.closes++
	}
	w.breaker = st.State
	w.mu.Unlock()
	line := fmt.Sprintf("  ◆ breaker %s: %s → %s", st.Provider, orDash(st.Previous), st.State)
	switch st.State {
	case contract.BreakerOpen:
		line += fmt.Sprintf(": calls fail fast until %s", untilText(st.OpenUntil))
		if st.Reason != "" {
			line += " (last failure: " + clip(st.Reason, 90) + ")"
		}
	case contract.BreakerHalfOpen:
		line += ": one probe call goes through"
	case contract.BreakerClosed:
		line += ": calls flow again"
	}
	w.n.say("%s", line)
}

func (w *watcher) onEmergency(m *nats.Msg) {
	var cmd contract.EmergencyCommand
	if json.Unmarshal(m.Data, &cmd) != nil {
		return
	}
	scope, auto := emergency.SubjectScope(strings.TrimPrefix(m.Subject, w.client.Subjects().Emergency("")))
	action := strings.ToLower(cmd.Action)
	if auto {
		action = emergency.ActionHalt // a worker's automatic halt, whatever it says
	}
	w.mu.Lock()
	repeat := action == "halt" && w.scopes[scope] == "halt"
	if action == "halt" && !repeat {
		w.halts++
	}
	if action == "resume" {
		w.resumes++
	}
	w.scopes[scope] = action
	w.mu.Unlock()
	note := ""
	if repeat {
		note = " (already halted)"
	}
	w.n.say("  ■ emergency %s %s by %s%s: %s", strings.ToUpper(action), scope, orDash(cmd.IssuedBy), note, cmd.Reason)
}

// state returns a scope's last emergency action as seen here ("" when none).
func (w *watcher) state(scope string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.scopes[scope]
}

// breakerCounts returns the breaker's trips and its recoveries through half-open.
func (w *watcher) breakerCounts() (trips, closes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.trips, w.closes
}

func errText(e *contract.Error) string {
	if e == nil {
		return "an error"
	}
	return e.Kind + ": " + clip(e.Message, 110)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func delay(ms *int64) string {
	if ms == nil {
		return "no time"
	}
	return (time.Duration(*ms) * time.Millisecond).String()
}

func untilText(t *time.Time) string {
	if t == nil {
		return "the open time ends"
	}
	return t.Local().Format("15:04:05.000")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
