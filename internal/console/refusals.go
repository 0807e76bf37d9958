package console

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// refusals ends the actions in flight when the NATS server refuses an operation
// of the console's user, which it reports asynchronously: a publish it refused
// would otherwise only time out.
type refusals struct {
	mu      sync.Mutex
	actions map[*actionCtx]bool
}

type actionCtx struct{ cancel context.CancelCauseFunc }

// errRefused is the cause of an action ended by a refusal.
var errRefused = errors.New("the NATS server refused it: this console's NATS user may not do that; run the console as a user of the console operator role (deploy/nats/auth.conf, docs/console.md)")

// watch makes nc report its permission violations to r, keeping its handler.
func (r *refusals) watch(nc *nats.Conn) {
	prev := nc.Opts.AsyncErrorCB
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			r.refuse(err)
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
}

func (r *refusals) refuse(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a := range r.actions {
		a.cancel(fmt.Errorf("%w (%v)", errRefused, err))
	}
}

// start returns the context of an action, ended by a refusal, and its end.
func (r *refusals) start(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	a := &actionCtx{cancel: cancel}
	r.mu.Lock()
	if r.actions == nil {
		r.actions = map[*actionCtx]bool{}
	}
	r.actions[a] = true
	r.mu.Unlock()
	return ctx, func() {
		r.mu.Lock()
		delete(r.actions, a)
		r.mu.Unlock()
		cancel(nil)
	}
}
