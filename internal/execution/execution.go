// Package execution owns the durable state of one execution while a worker runs
// it: the claim, every write the execution makes, their pipelining, and what a
// resumed owner reads back.
//
// The claim is the revision of the execution's status key in flow_state: a Create
// for a new execution, an Update by revision to take one over. That revision is
// the fencing token. Checkpoints, the result and order marks are published to
// their $KV subjects with Nats-Expected-Last-Subject-Sequence = the claim and
// Nats-Expected-Last-Subject-Sequence-Subject = the status key's subject, so once
// another worker has taken the execution over (the status moved on), the server
// refuses them: a stale owner's write fails instead of landing. The final status
// is an Update by the claim, and the terminal event is published only after it
// succeeded. Events cannot be fenced (they live in another stream); their ids
// carry the claim, so two owners' events never collide or replace each other.
//
// Writes are pipelined: events and checkpoints are published asynchronously and
// all awaited before the final status is written (Finish) and before a side
// effect (Confirm). See docs/execution-core.md.
package execution

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/kvstate"
)

var (
	// ErrLostOwnership is returned by any write of an execution that another
	// worker has claimed since: the server refused it.
	ErrLostOwnership = errors.New("execution: another worker took over this execution")
	// ErrClaimed is returned by Claim when the status changed since it was read
	// (or, for a new execution, exists): the caller reads it and decides.
	ErrClaimed = errors.New("execution: status changed since it was read")
)

// Server error codes of a refused Nats-Expected-Last-Subject-Sequence.
const (
	// errCodeWrongLastSeq: the status key is no longer at the claim revision.
	errCodeWrongLastSeq = 10071
	// errCodeSubjectInProcess: a replicated stream refuses a second expectation on
	// a subject while an earlier one is still being replicated; the claim may hold.
	errCodeSubjectInProcess = 10164
)

// Store claims executions and gives each claim its Owner. It is safe for
// concurrent use.
type Store struct {
	js       jetstream.Publisher
	state    *kvstate.Store
	kvPrefix string // "$KV.<bucket>."
	subjects contract.Subjects
	observer Observer
}

// Observer is told of every write an execution waits for (claim, awaiting the
// pipeline, the final status, the terminal event, a confirmation): the round
// trips one after another on its path. It must not block.
type Observer interface {
	RoundTrip(what string)
}

// Option configures a Store.
type Option func(*Store)

// WithObserver reports each sequential round trip to o.
func WithObserver(o Observer) Option { return func(s *Store) { s.observer = o } }

// New returns a store that writes execution state into the bucket of state (its
// kv is flow_state) and publishes events with js.
func New(js jetstream.Publisher, state *kvstate.Store, bucket string, subjects contract.Subjects, opts ...Option) *Store {
	s := &Store{js: js, state: state, kvPrefix: "$KV." + bucket + ".", subjects: subjects}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) roundTrip(what string) {
	if s.observer != nil {
		s.observer.RoundTrip(what)
	}
}

// Status returns an execution's status and its revision, or kvstate.ErrNotFound.
func (s *Store) Status(ctx context.Context, workflowID, executionID string) (*contract.Status, uint64, error) {
	s.roundTrip("read status")
	return s.state.Status(ctx, workflowID, executionID)
}

// Claim makes the caller the owner of an execution by writing st: a Create when
// rev is 0 (a new execution: the create is the duplicate check), else an Update by
// rev (a takeover). lastSeq is the sequence of the execution's last stored event.
// It returns ErrClaimed when the status is not (or no longer) at rev.
func (s *Store) Claim(ctx context.Context, st *contract.Status, rev uint64, id Identity, lastSeq uint64) (*Owner, error) {
	s.roundTrip("claim")
	claim, err := s.state.PutStatus(ctx, st, rev)
	if errors.Is(err, kvstate.ErrConflict) {
		return nil, ErrClaimed
	}
	if err != nil {
		return nil, err
	}
	return newOwner(s, st, claim, id, lastSeq), nil
}

// classify turns a refused fenced write into ErrLostOwnership, and tells whether
// the refusal may be retried (the subject was busy in a replicated stream).
func classify(err error) (out error, retry bool) {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeWrongLastSeq:
			return fmt.Errorf("%w: %v", ErrLostOwnership, err), false
		case errCodeSubjectInProcess:
			return err, true
		}
	}
	return err, false
}
