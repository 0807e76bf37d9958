package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/execution"
	"github.com/flowguard/flowguard/internal/executor"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/policy"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/workflow"
)

// maxCachedPlans bounds the cache of compiled deployed workflows.
const maxCachedPlans = 1024

// plans compiles workflow definitions and caches the deployed ones by version.
// A watch of flow_workflows keeps each workflow's latest version in memory, so a
// request costs no read of the bucket.
type plans struct {
	store    *kvstate.Store
	registry *nodes.Registry
	reads    execution.Observer // told of each read of the bucket; may be nil
	inlined  policy.Inline

	mu     sync.Mutex
	cache  map[planKey]*executor.Plan
	latest map[string]deployedDef // by workflow id, from the watch
	synced bool                   // the watch delivered the bucket's contents
}

// deployedDef is a workflow's latest definition as the watch saw it.
type deployedDef struct {
	data    []byte
	version uint64
}

type planKey struct {
	id      string
	version uint64
}

func newPlans(store *kvstate.Store, registry *nodes.Registry, reads execution.Observer, inlined policy.Inline) *plans {
	return &plans{store: store, registry: registry, reads: reads, inlined: inlined, cache: make(map[planKey]*executor.Plan), latest: make(map[string]deployedDef)}
}

// watch follows flow_workflows until ctx ends. Until the watch has delivered the
// bucket's contents, and for a workflow it has not seen (deployed a moment ago),
// deployed reads the bucket.
func (p *plans) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					p.unwatched() // the bucket is read again, never a stale copy
					return
				}
				p.seen(e)
			}
		}
	}()
	return nil
}

// seen records one entry of the watch; nil marks the end of the initial contents.
func (p *plans) seen(e jetstream.KeyValueEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case e == nil:
		p.synced = true
	case e.Operation() != jetstream.KeyValuePut:
		delete(p.latest, e.Key())
	case e.Revision() > p.latest[e.Key()].version:
		p.latest[e.Key()] = deployedDef{data: e.Value(), version: e.Revision()}
	}
}

// unwatched forgets what the watch saw, once it has ended.
func (p *plans) unwatched() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.synced = false
	clear(p.latest)
}

// watched returns the latest definition of a workflow as the watch saw it.
func (p *plans) watched(id string) (deployedDef, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.latest[id]
	return d, ok && p.synced
}

// deployed returns the plan of a deployed workflow: its latest version when version
// is 0. A missing or invalid workflow, or a version no longer kept, is a
// *contract.Rejection; other errors are transient.
func (p *plans) deployed(ctx context.Context, id string, version uint64) (*executor.Plan, error) {
	if version != 0 {
		if plan := p.cached(planKey{id, version}); plan != nil {
			return plan, nil
		}
	}
	if version == 0 {
		if d, ok := p.watched(id); ok {
			return p.compileCached(d.data, id, d.version)
		}
	}
	if p.reads != nil {
		p.reads.RoundTrip("read workflow")
	}
	data, rev, err := p.store.Workflow(ctx, id, version)
	if errors.Is(err, kvstate.ErrNotFound) && version != 0 {
		return nil, contract.Reject(contract.KindWorkflowVersionGone,
			"workflow %q version %d, on which this execution started, is no longer stored: flow_workflows keeps only the last %d versions of a workflow, so it cannot resume; publish a new request (a new request_id) to run the current version",
			id, version, provision.WorkflowHistory)
	}
	if errors.Is(err, kvstate.ErrNotFound) {
		return nil, contract.Reject(contract.KindUnknownWorkflow,
			"workflow %q is not deployed: deploy it (publisher deploy FILE) or send the definition inline in the request's workflow field", id)
	}
	if err != nil {
		return nil, err
	}
	return p.compileCached(data, id, rev)
}

// compileCached returns the plan of a deployed version, compiling it once.
func (p *plans) compileCached(data []byte, id string, rev uint64) (*executor.Plan, error) {
	key := planKey{id, rev}
	if plan := p.cached(key); plan != nil {
		return plan, nil
	}
	plan, err := p.compile(data, id, rev)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cache) >= maxCachedPlans {
		clear(p.cache)
	}
	p.cache[key] = plan
	return plan, nil
}

// inline compiles a definition sent in the request, if the worker's policy lets it
// run; a refusal is an invalid_request *contract.Rejection.
func (p *plans) inline(raw json.RawMessage, id string) (*executor.Plan, error) {
	def := &workflow.Definition{ID: id}
	var err error
	if p.inlined.Enabled {
		if def, err = p.parse(raw, id); err != nil {
			return nil, err
		}
	}
	if err := p.inlined.Check(def); err != nil {
		return nil, contract.Reject(contract.KindInvalidRequest, "%v", err)
	}
	return p.compileDef(def, 0)
}

func (p *plans) cached(key planKey) *executor.Plan {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cache[key]
}

func (p *plans) compile(data []byte, id string, version uint64) (*executor.Plan, error) {
	def, err := p.parse(data, id)
	if err != nil {
		return nil, err
	}
	return p.compileDef(def, version)
}

func (p *plans) parse(data []byte, id string) (*workflow.Definition, error) {
	def, err := workflow.Parse(data)
	if err != nil {
		return nil, contract.Reject(contract.KindInvalidWorkflow, "%v", err)
	}
	if def.ID != id {
		return nil, contract.Reject(contract.KindInvalidWorkflow,
			"the definition's id %q differs from the requested workflow_id %q", def.ID, id)
	}
	return def, nil
}

func (p *plans) compileDef(def *workflow.Definition, version uint64) (*executor.Plan, error) {
	runners, err := p.registry.Compile(def)
	if err != nil {
		return nil, contract.Reject(contract.KindInvalidWorkflow, "%v", err)
	}
	return executor.NewPlan(def, version, runners), nil
}
