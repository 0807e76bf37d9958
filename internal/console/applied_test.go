package console

import (
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/emergency"
)

// The emergency view's "every worker by" is when the last worker applied the
// command, as the workers report it; a worker that reports no applied_at counts
// from when the console saw it.
func TestMarkAppliedTakesTheLastWorkersAppliedAt(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	halted := func(seq uint64, at time.Time) emergency.Board {
		return emergency.Board{"bot.b1": {Scope: "bot.b1", State: emergency.Halted, Seq: seq, AppliedAt: at}}
	}
	f := &feeds{board: halted(5, time.Time{}), applied: map[string]appliedMark{}}

	f.markApplied(map[string]*WorkerStatus{
		"w1": {ID: "w1", Emergency: halted(5, t0.Add(time.Millisecond)), Seen: t0.Add(time.Second)},
		"w2": {ID: "w2", Emergency: halted(4, t0), Seen: t0.Add(time.Second)},
	})
	if mark, ok := f.applied["bot.b1"]; ok {
		t.Fatalf("marked %+v while w2 has not applied seq 5", mark)
	}

	f.markApplied(map[string]*WorkerStatus{
		"w1": {ID: "w1", Emergency: halted(5, t0.Add(time.Millisecond)), Seen: t0.Add(2 * time.Second)},
		"w2": {ID: "w2", Emergency: halted(5, t0.Add(3*time.Millisecond)), Seen: t0.Add(2 * time.Second)},
	})
	if got := f.applied["bot.b1"]; got.Seq != 5 || !got.At.Equal(t0.Add(3*time.Millisecond)) {
		t.Errorf("marked %+v, want seq 5 at w2's applied_at", got)
	}

	f.board = halted(6, time.Time{})
	f.markApplied(map[string]*WorkerStatus{
		"old": {ID: "old", Emergency: halted(6, time.Time{}), Seen: t0.Add(4 * time.Second)},
	})
	if got := f.applied["bot.b1"]; got.Seq != 6 || !got.At.Equal(t0.Add(4*time.Second)) {
		t.Errorf("marked %+v, want seq 6 when the console saw the worker that reports no applied_at", got)
	}
}
