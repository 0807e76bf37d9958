package console

import (
	"context"
	"sync"
	"time"
)

// Topics of the live page: a page names those it shows, and reloads its live part
// when one of them changes.
const (
	topicExecutions = "executions"
	topicFleet      = "fleet"
	topicProviders  = "providers"
	topicRisk       = "risk"
	topicEmergency  = "emergency"
	topicDLQ        = "dlq"
	topicSchedules  = "schedules"
	// topicExecution + id: one execution changed.
	topicExecution = "x."
)

// hub tells the browsers which topics changed. Changes are coalesced: a subscriber
// hears of a topic at most once per flush interval, however many events touched it,
// so 10,000 executions finishing at once cost each page one reload.
type hub struct {
	mu      sync.Mutex
	pending map[string]bool
	subs    map[*subscriber]bool
}

type subscriber struct {
	topics  map[string]bool
	changed map[string]bool // under the hub's lock
	notify  chan struct{}
}

func newHub() *hub {
	return &hub{pending: map[string]bool{}, subs: map[*subscriber]bool{}}
}

// touch marks a topic changed.
func (h *hub) touch(topic string) {
	h.mu.Lock()
	h.pending[topic] = true
	h.mu.Unlock()
}

// touchAll marks every topic changed, so that every page reloads.
func (h *hub) touchAll() { h.touch(topicAll) }

// topicAll stands for every topic.
const topicAll = "*"

// subscribe returns a subscriber to topics; cancel it with unsubscribe.
func (h *hub) subscribe(topics []string) *subscriber {
	s := &subscriber{topics: map[string]bool{}, changed: map[string]bool{}, notify: make(chan struct{}, 1)}
	for _, t := range topics {
		s.topics[t] = true
	}
	h.mu.Lock()
	h.subs[s] = true
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// run flushes the changed topics to the subscribers every interval until ctx ends.
// changes returns and forgets the topics changed since the last call.
func (h *hub) changes(s *subscriber) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(s.changed))
	for t := range s.changed {
		out = append(out, t)
	}
	clear(s.changed)
	return out
}

func (h *hub) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.flush()
		}
	}
}

func (h *hub) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) == 0 {
		return
	}
	for s := range h.subs {
		for t := range s.topics {
			if h.pending[t] || h.pending[topicAll] {
				s.changed[t] = true
			}
		}
		if len(s.changed) == 0 {
			continue
		}
		select {
		case s.notify <- struct{}{}:
		default: // already notified; it takes every change at once
		}
	}
	clear(h.pending)
}
