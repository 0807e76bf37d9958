// Command watermill is the peer flowbench measures flowguard against: the workload
// of flowbench's comparison (a chain of transform nodes per request: events
// published asynchronously, KV writes made synchronously, a retry, circuit breaker
// and timeout middleware around each node, then the ack) written as a user of
// Watermill and watermill-nats (JetStream) would write it. It lives in its own Go
// module, so that flowguard's module does not depend on Watermill; flowbench
// builds and runs it against the server it measures (see docs/performance.md).
//
// It binds to streams and a bucket flowbench creates: requests on
// <prefix>.exec.<workflow>, events on <prefix>.events.<bot>.<workflow>.<exec>.<type>,
// state in the KV bucket <prefix>_state under flowguard's key layout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker"
)

func main() {
	url := flag.String("nats-url", nats.DefaultURL, "NATS server URL")
	prefix := flag.String("prefix", "wm", "subject prefix; the bucket is <prefix>_state")
	nodes := flag.Int("nodes", 3, "transform nodes in the chain")
	concurrency := flag.Int("concurrency", 64, "requests handled at once (watermill-nats SubscribersCount)")
	ackWait := flag.Duration("ack-wait", 30*time.Second, "ack wait of the consumer")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *prefix, *nodes, *concurrency, *ackWait); err != nil {
		fmt.Fprintln(os.Stderr, "watermill peer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, prefix string, nodes, concurrency int, ackWait time.Duration) error {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, prefix+"_state")
	if err != nil {
		return fmt.Errorf("open bucket %s_state (flowbench creates it): %w", prefix, err)
	}
	logger := watermill.NopLogger{}
	sub, err := wmnats.NewSubscriberWithNatsConn(nc, wmnats.SubscriberSubscriptionConfig{
		QueueGroupPrefix: prefix + "_peer",
		SubscribersCount: concurrency,
		AckWaitTimeout:   ackWait,
		Unmarshaler:      &wmnats.NATSMarshaler{},
		JetStream: wmnats.JetStreamConfig{
			DurablePrefix: prefix + "_peer",
			SubscribeOptions: []nats.SubOpt{nats.ManualAck(), nats.AckExplicit(), nats.AckWait(ackWait),
				nats.MaxAckPending(4 * concurrency)},
		},
	}, logger)
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return err
	}
	h := &handler{js: js, kv: kv, prefix: prefix, nodes: make([]message.HandlerFunc, nodes)}
	for i := range nodes {
		h.nodes[i] = wrapNode(fmt.Sprintf("n%d", i))
	}
	router.AddConsumerHandler("execute", prefix+".exec.>", sub, h.handle)
	return router.Run(ctx)
}

// wrapNode is a transform node (x = input + 1) behind the middleware a Watermill
// user puts around a step, outer to inner: retry, circuit breaker, timeout.
func wrapNode(name string) message.HandlerFunc {
	node := func(msg *message.Message) ([]*message.Message, error) {
		var in struct{ X float64 }
		if err := json.Unmarshal(msg.Payload, &in); err != nil {
			return nil, err
		}
		out, err := json.Marshal(map[string]any{"x": in.X + 1})
		if err != nil {
			return nil, err
		}
		return []*message.Message{message.NewMessage(msg.UUID, out)}, nil
	}
	retry := middleware.Retry{MaxRetries: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2}
	breaker := middleware.NewCircuitBreaker(gobreaker.Settings{Name: name})
	return retry.Middleware(breaker.Middleware(middleware.Timeout(5 * time.Second)(node)))
}

type handler struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	prefix string
	nodes  []message.HandlerFunc
}

type request struct {
	WorkflowID string         `json:"workflow_id"`
	BotID      string         `json:"bot_id"`
	RequestID  string         `json:"request_id"`
	Inputs     map[string]any `json:"inputs"`
}

type event struct {
	Type        string         `json:"type"`
	EventID     string         `json:"event_id"`
	Seq         int            `json:"seq"`
	Time        time.Time      `json:"time"`
	WorkflowID  string         `json:"workflow_id"`
	BotID       string         `json:"bot_id"`
	ExecutionID string         `json:"execution_id"`
	NodeID      string         `json:"node_id,omitempty"`
	NodeType    string         `json:"node_type,omitempty"`
	Outputs     map[string]any `json:"outputs,omitempty"`
}

type status struct {
	ExecutionID string    `json:"execution_id"`
	WorkflowID  string    `json:"workflow_id"`
	Status      string    `json:"status"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// execution is one request's run: its events' futures are awaited before the ack.
type execution struct {
	h       *handler
	req     request
	seq     int
	futures []jetstream.PubAckFuture
}

func (e *execution) publish(typ, nodeID string, outputs map[string]any) error {
	e.seq++
	ev := event{Type: typ, EventID: e.req.RequestID + "." + strconv.Itoa(e.seq), Seq: e.seq, Time: time.Now().UTC(),
		WorkflowID: e.req.WorkflowID, BotID: e.req.BotID, ExecutionID: e.req.RequestID, NodeID: nodeID, Outputs: outputs}
	if nodeID != "" {
		ev.NodeType = "transform"
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	m := nats.NewMsg(fmt.Sprintf("%s.events.%s.%s.%s.%s", e.h.prefix, e.req.BotID, e.req.WorkflowID, e.req.RequestID, typ))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, ev.EventID)
	f, err := e.h.js.PublishMsgAsync(m)
	if err != nil {
		return fmt.Errorf("publish %s: %w", typ, err)
	}
	e.futures = append(e.futures, f)
	return nil
}

func (e *execution) key(suffix string) string {
	return "workflow." + e.req.WorkflowID + ".execution." + e.req.RequestID + suffix
}

func (e *execution) putJSON(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := e.h.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// handle runs one request: claim the status, run the nodes, store the result and
// the final status, and wait until every event is stored. Returning nil acks.
func (h *handler) handle(msg *message.Message) error {
	ctx, cancel := context.WithTimeout(msg.Context(), 30*time.Second)
	defer cancel()
	e := &execution{h: h}
	if err := json.Unmarshal(msg.Payload, &e.req); err != nil {
		return nil // a malformed request cannot run: drop it, as the peer's user would after logging
	}
	st := status{ExecutionID: e.req.RequestID, WorkflowID: e.req.WorkflowID, Status: "running", UpdatedAt: time.Now().UTC()}
	data, _ := json.Marshal(st)
	rev, err := h.kv.Create(ctx, e.key(".status"), data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		entry, err := h.kv.Get(ctx, e.key(".status"))
		if err != nil {
			return err
		}
		var old status
		if json.Unmarshal(entry.Value(), &old) == nil && old.Status == "completed" {
			return nil // a duplicate delivery of a finished request
		}
		if rev, err = h.kv.Update(ctx, e.key(".status"), data, entry.Revision()); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := e.publish("execution_started", "", nil); err != nil {
		return err
	}
	if _, err := h.kv.Put(ctx, "workflow."+e.req.WorkflowID+".latest_execution", []byte(e.req.RequestID)); err != nil {
		return err
	}
	x, _ := e.req.Inputs["n"].(float64)
	outputs := map[string]map[string]any{}
	for i, node := range h.nodes {
		id := fmt.Sprintf("n%d", i)
		if err := e.publish("node_started", id, nil); err != nil {
			return err
		}
		in, _ := json.Marshal(map[string]any{"x": x})
		orig := msg.Context()
		nodeMsg := message.NewMessage(msg.UUID, in)
		nodeMsg.SetContext(orig)
		produced, err := node(nodeMsg)
		if err != nil {
			return fmt.Errorf("node %s: %w", id, err)
		}
		var out map[string]any
		if err := json.Unmarshal(produced[0].Payload, &out); err != nil {
			return err
		}
		x, _ = out["x"].(float64)
		outputs[id] = out
		if err := e.putJSON(ctx, e.key(".node."+id), map[string]any{"node_id": id, "state": "completed", "outputs": out,
			"finished_at": time.Now().UTC()}); err != nil {
			return err
		}
		if err := e.publish("node_completed", id, out); err != nil {
			return err
		}
	}
	if err := e.putJSON(ctx, e.key(".result"), map[string]any{"execution_id": e.req.RequestID, "workflow_id": e.req.WorkflowID,
		"status": "completed", "outputs": outputs}); err != nil {
		return err
	}
	st.Status, st.UpdatedAt = "completed", time.Now().UTC()
	data, _ = json.Marshal(st)
	if _, err := h.kv.Update(ctx, e.key(".status"), data, rev); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	if err := e.publish("execution_completed", "", nil); err != nil {
		return err
	}
	for _, f := range e.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("event not stored: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
