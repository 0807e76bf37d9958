// Package client is what users' tools need to drive flowguard over NATS: deploy
// workflows, submit requests, follow events and read execution state. The publisher
// command is built on it; any other NATS client can do the same from the contract.
package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/kvstate"
	"github.com/flowguard/flowguard/internal/nodes"
	"github.com/flowguard/flowguard/internal/workflow"
	"github.com/flowguard/flowguard/schemas"
)

// ErrNotProvisioned is returned when the streams or buckets do not exist yet.
var ErrNotProvisioned = errors.New("flowguard streams and buckets are missing: start a worker once (it creates them), or check --prefix and the NATS URL")

// Client talks to a flowguard deployment.
type Client struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects contract.Subjects
	registry *nodes.Registry
}

// New returns a client using subject prefix (default "flow").
func New(nc *nats.Conn, prefix string) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if prefix == "" {
		prefix = contract.DefaultPrefix
	}
	// The client checks definitions and never runs them: the registry's types
	// without the worker's services suffice, nats_request knowing the prefix whose
	// subjects it refuses.
	registry := nodes.NewRegistry()
	registry.Register(nodes.TypeNATSRequest, nodes.NATSRequest{Prefix: prefix})
	return &Client{nc: nc, js: js, subjects: contract.Subjects{Prefix: prefix}, registry: registry}, nil
}

// Subjects are the subjects of the deployment the client talks to.
func (c *Client) Subjects() contract.Subjects { return c.subjects }

// Registry is the set of node types the client validates definitions against.
func (c *Client) Registry() *nodes.Registry { return c.registry }

// Validate checks a workflow definition as a worker would.
func (c *Client) Validate(def []byte) (*workflow.Definition, error) {
	d, err := workflow.Parse(def)
	if err != nil {
		return nil, err
	}
	if _, err := c.registry.Compile(d); err != nil {
		return nil, err
	}
	return d, nil
}

// Deploy validates a definition and stores it; it returns the workflow id and its new version.
func (c *Client) Deploy(ctx context.Context, def []byte) (string, uint64, error) {
	d, err := c.Validate(def)
	if err != nil {
		return "", 0, err
	}
	store, err := c.store(ctx)
	if err != nil {
		return "", 0, err
	}
	rev, err := store.PutWorkflow(ctx, d.ID, def)
	return d.ID, rev, err
}

// NewRequestID returns a random request id.
func NewRequestID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("r%x", b)
}

// Submit publishes a request, giving it a request id when it has none, and returns
// the execution id (the request id). A republished request (see Send) is not an
// error.
func (c *Client) Submit(ctx context.Context, req *contract.Request) (string, error) {
	sent, err := c.Send(ctx, req)
	return sent.ExecutionID, err
}

// Sent is what the stream said of a published request.
type Sent struct {
	// ExecutionID is the request id, the execution's id.
	ExecutionID string
	// Duplicate is true when the stream already held a request with this workflow
	// and request id (within its duplicate window), and did not store this one.
	Duplicate bool
}

// Send publishes a request, giving it a request id when it has none. Its
// Nats-Msg-Id is <workflow_id>.<request_id>, so a request republished within the
// stream's duplicate window is stored once, and Sent says so.
func (c *Client) Send(ctx context.Context, req *contract.Request) (Sent, error) {
	if req.RequestID == "" {
		req.RequestID = NewRequestID()
	}
	data, err := json.Marshal(req)
	if err != nil {
		return Sent{}, err
	}
	if err := schemas.ValidateJSON(schemas.ExecutionRequest, data); err != nil {
		return Sent{}, fmt.Errorf("request %w", err)
	}
	msg := nats.NewMsg(c.subjects.Exec(req.WorkflowID, req.BotID))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, contract.RequestMsgID(req.WorkflowID, req.RequestID))
	if req.CorrelationID != "" {
		msg.Header.Set(contract.HeaderCorrelationID, req.CorrelationID)
	}
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return Sent{}, c.publishError(err)
	}
	return Sent{ExecutionID: req.RequestID, Duplicate: ack.Duplicate}, nil
}

// Filter selects events; empty fields match anything.
type Filter struct {
	BotID, WorkflowID, ExecutionID string
}

// Follow calls fn with each event matching f, in stream order, until fn returns
// true, ctx ends or an error occurs. With replay it starts from the oldest stored
// event, else from new ones.
func (c *Client) Follow(ctx context.Context, f Filter, replay bool, fn func(*contract.Event) (stop bool)) error {
	filter := c.subjects.EventFilter(f.BotID, f.WorkflowID, f.ExecutionID)
	return c.follow(ctx, contract.StreamEvents, filter, replay, func(m jetstream.Msg, _ *jetstream.MsgMetadata) bool {
		var ev contract.Event
		if json.Unmarshal(m.Data(), &ev) != nil {
			return false // not an event of this contract; skip it
		}
		return fn(&ev)
	})
}

// follow calls fn with each message of stream matching filter until fn returns true
// or ctx ends; with replay from the oldest, else from new ones.
func (c *Client) follow(ctx context.Context, stream, filter string, replay bool, fn func(jetstream.Msg, *jetstream.MsgMetadata) bool) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if replay {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	cons, err := c.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return ErrNotProvisioned
		}
		return fmt.Errorf("follow %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow %s: %w", stream, err)
	}
	stopped := context.AfterFunc(ctx, it.Stop)
	defer stopped()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow %s: %w", stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		if fn(msg, meta) {
			return nil
		}
	}
}

// readAll calls fn with every stored message of stream matching filter, oldest first.
func (c *Client) readAll(ctx context.Context, stream, filter string, fn func(jetstream.Msg, *jetstream.MsgMetadata)) error {
	s, err := c.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return ErrNotProvisioned
	}
	if err != nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return err
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil
	}
	var read uint64
	return c.follow(ctx, stream, filter, true, func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
		fn(m, meta)
		read++
		return meta.NumPending == 0 || read >= total
	})
}

// publishError explains a failed publish.
func (c *Client) publishError(err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return ErrNotProvisioned
	}
	return fmt.Errorf("publish: %w", err)
}

// Status returns an execution's status; workflowID may be empty, then it is looked up.
func (c *Client) Status(ctx context.Context, workflowID, executionID string) (*contract.Status, error) {
	store, err := c.store(ctx)
	if err != nil {
		return nil, err
	}
	if workflowID == "" {
		if workflowID, err = store.FindExecution(ctx, executionID); err != nil {
			return nil, err
		}
	}
	st, _, err := store.Status(ctx, workflowID, executionID)
	return st, err
}

// Result returns an execution's result.
func (c *Client) Result(ctx context.Context, workflowID, executionID string) (*contract.Result, error) {
	store, err := c.store(ctx)
	if err != nil {
		return nil, err
	}
	return store.Result(ctx, workflowID, executionID)
}

// Latest returns the id of a workflow's latest execution.
func (c *Client) Latest(ctx context.Context, workflowID string) (string, error) {
	store, err := c.store(ctx)
	if err != nil {
		return "", err
	}
	return store.Latest(ctx, workflowID)
}

func (c *Client) store(ctx context.Context) (*kvstate.Store, error) {
	state, err := c.js.KeyValue(ctx, contract.BucketState)
	if err != nil {
		return nil, notProvisioned(err)
	}
	workflows, err := c.js.KeyValue(ctx, contract.BucketWorkflows)
	if err != nil {
		return nil, notProvisioned(err)
	}
	return kvstate.New(state, workflows), nil
}

func notProvisioned(err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ErrNotProvisioned
	}
	return err
}

// ParseInput turns key=value into a request input; the value is read as JSON when it
// parses (numbers, booleans, objects), else kept as a string.
func ParseInput(kv string) (string, any, error) {
	key, value, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return "", nil, fmt.Errorf("input %q must be key=value, for example symbol=BTCUSDT or qty=0.5", kv)
	}
	var v any
	if err := json.Unmarshal([]byte(value), &v); err != nil {
		v = value
	}
	return key, v, nil
}
