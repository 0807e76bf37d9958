// Package kvstate gives typed access to flowguard's KV buckets: execution state
// (flow_state) and workflow definitions (flow_workflows), and loads any bucket
// that a worker follows by a watch (WatchLoaded). A running execution's
// writes do not come here: its owner (internal/execution) fences them.
package kvstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/resilience"
)

var (
	// ErrNotFound is returned when a key does not exist (or has expired).
	ErrNotFound = errors.New("kvstate: not found")
	// ErrConflict is returned when a status was changed by another writer since it was read.
	ErrConflict = errors.New("kvstate: changed by another writer")
)

// Store reads and writes execution state and workflow definitions.
type Store struct {
	state     jetstream.KeyValue
	workflows jetstream.KeyValue
}

// New returns a store over the flow_state and flow_workflows buckets.
func New(state, workflows jetstream.KeyValue) *Store {
	return &Store{state: state, workflows: workflows}
}

// Status returns an execution's status and its revision.
func (s *Store) Status(ctx context.Context, workflowID, executionID string) (*contract.Status, uint64, error) {
	var st contract.Status
	rev, err := s.get(ctx, s.state, contract.StatusKey(workflowID, executionID), &st)
	if err != nil {
		return nil, 0, err
	}
	return &st, rev, nil
}

// PutStatus writes st if the key is still at revision rev (0: the key must not
// exist), so that two workers never both own an execution. It returns the new
// revision, or ErrConflict.
func (s *Store) PutStatus(ctx context.Context, st *contract.Status, rev uint64) (uint64, error) {
	key := contract.StatusKey(st.WorkflowID, st.ExecutionID)
	data, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	return s.compareAndSet(ctx, key, data, rev)
}

// compareAndSet writes data at key if the key is still at revision rev (0: it
// must not exist), and returns the new revision, or ErrConflict.
func (s *Store) compareAndSet(ctx context.Context, key string, data []byte, rev uint64) (uint64, error) {
	var newRev uint64
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		if rev == 0 {
			newRev, err = s.state.Create(ctx, key, data)
		} else {
			newRev, err = s.state.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// An earlier try may have been written with its reply lost: then the key holds our value.
			if e, gerr := s.state.Get(ctx, key); gerr == nil && bytes.Equal(e.Value(), data) {
				newRev = e.Revision()
				return nil
			}
			return ErrConflict
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	return newRev, nil
}

// Result returns an execution's result.
func (s *Store) Result(ctx context.Context, workflowID, executionID string) (*contract.Result, error) {
	var r contract.Result
	if _, err := s.get(ctx, s.state, contract.ResultKey(workflowID, executionID), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Latest returns the id of a workflow's latest execution.
func (s *Store) Latest(ctx context.Context, workflowID string) (string, error) {
	e, err := s.state.Get(ctx, contract.LatestKey(workflowID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("workflow %s: latest execution: %w", workflowID, ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}

// Checkpoints returns the finished nodes of an execution, by node id.
func (s *Store) Checkpoints(ctx context.Context, workflowID, executionID string) (map[string]*contract.Checkpoint, error) {
	w, err := s.state.Watch(ctx, contract.CheckpointPrefix(workflowID, executionID), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of %s: %w", executionID, err)
	}
	defer w.Stop()
	out := make(map[string]*contract.Checkpoint)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read checkpoints of %s: watcher closed", executionID)
			}
			if e == nil { // initial values delivered
				return out, nil
			}
			var cp contract.Checkpoint
			if err := json.Unmarshal(e.Value(), &cp); err != nil {
				return nil, fmt.Errorf("decode checkpoint %s: %w", e.Key(), err)
			}
			out[cp.NodeID] = &cp
		}
	}
}

// FindExecution returns the workflow of an execution id, by searching status keys.
func (s *Store) FindExecution(ctx context.Context, executionID string) (string, error) {
	lister, err := s.state.ListKeysFiltered(ctx, contract.StatusKey("*", executionID))
	if err != nil {
		return "", err
	}
	defer lister.Stop()
	suffix := ".execution." + executionID + ".status"
	for key := range lister.Keys() {
		return strings.TrimSuffix(strings.TrimPrefix(key, "workflow."), suffix), nil
	}
	return "", fmt.Errorf("execution %s: %w", executionID, ErrNotFound)
}

// OrderMark returns the mark of an order node and its revision.
func (s *Store) OrderMark(ctx context.Context, workflowID, executionID, nodeID string) (*contract.OrderMark, uint64, error) {
	var m contract.OrderMark
	rev, err := s.get(ctx, s.state, contract.OrderMarkKey(workflowID, executionID, nodeID), &m)
	if err != nil {
		return nil, 0, err
	}
	return &m, rev, nil
}

// Workflow returns a deployed definition and its version (KV revision): the latest
// when version is 0, else that version, for an execution resumed after a redeploy.
// It returns ErrNotFound when the workflow is not deployed, or no longer keeps that
// version.
func (s *Store) Workflow(ctx context.Context, workflowID string, version uint64) ([]byte, uint64, error) {
	var e jetstream.KeyValueEntry
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		if version == 0 {
			e, err = s.workflows.Get(ctx, workflowID)
		} else {
			e, err = s.workflows.GetRevision(ctx, workflowID, version)
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("workflow %s: %w", workflowID, err)
	}
	return e.Value(), e.Revision(), nil
}

// PutWorkflow stores a definition and returns its new version.
func (s *Store) PutWorkflow(ctx context.Context, workflowID string, def []byte) (uint64, error) {
	rev, err := s.workflows.Put(ctx, workflowID, def)
	if err != nil {
		return 0, fmt.Errorf("store workflow %s: %w", workflowID, err)
	}
	return rev, nil
}

func (s *Store) get(ctx context.Context, kv jetstream.KeyValue, key string, into any) (uint64, error) {
	var e jetstream.KeyValueEntry
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		e, err = kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), into); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// retry runs an idempotent KV operation until it succeeds, ends with ErrNotFound or
// ErrConflict, or ctx ends.
func retry(ctx context.Context, op func(ctx context.Context) error) error {
	return resilience.RetryIO(ctx, func(err error) bool {
		return errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict)
	}, op)
}

// WatchLoaded watches every key of kv and passes each entry of its current content
// to apply before it returns, so that the caller starts from the bucket as it is.
// It gives up after within, or when ctx ends; the watcher it returns delivers the
// updates after that content, until ctx ends or it is stopped.
func WatchLoaded(ctx context.Context, kv jetstream.KeyValue, within time.Duration, apply func(jetstream.KeyValueEntry)) (jetstream.KeyWatcher, error) {
	kw, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for {
		select {
		case e, ok := <-kw.Updates():
			if !ok {
				return nil, fmt.Errorf("watch bucket %s: the watch closed while loading", kv.Bucket())
			}
			if e == nil {
				return kw, nil
			}
			apply(e)
		case <-timeout.C:
			_ = kw.Stop()
			return nil, fmt.Errorf("watch bucket %s: its content did not arrive within %s; check the NATS connection", kv.Bucket(), within)
		case <-ctx.Done():
			_ = kw.Stop()
			return nil, ctx.Err()
		}
	}
}
