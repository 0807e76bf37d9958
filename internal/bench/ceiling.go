package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
)

// ceilingConsumer is the durable consumer the ceiling worker takes requests from.
const ceilingConsumer = "ceiling"

// Ceiling runs, until ctx ends, the least JetStream work the contract asks of an
// execution of a chain of nodes transform nodes, with the fewest round trips one
// after another: take a request from <prefix>_EXEC; claim it by creating its status
// (the one write that must be confirmed before anything else, since it is the
// duplicate check); then, pipelined and awaited together, the 2n+2 events, the
// latest_execution key, the result and the final status (the status written only
// if its revision is still the claim's); then a plain ack. Transform nodes need no
// checkpoint (contract version 4: a pure node's is written only before a node
// that is not pure starts).
// Two round trips in sequence, whatever the number of nodes. It binds to the
// streams and bucket flowbench creates (see provisionPeer).
func Ceiling(ctx context.Context, nc *nats.Conn, prefix string, nodes, concurrency int) error {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(64*concurrency))
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, peerStreams(prefix).exec, jetstream.ConsumerConfig{Durable: ceilingConsumer,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 4 * concurrency})
	if err != nil {
		return fmt.Errorf("create consumer %s on %s (flowbench creates the stream): %w", ceilingConsumer, peerStreams(prefix).exec, err)
	}
	jobs := make(chan jetstream.Msg, concurrency)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case jobs <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(concurrency))
	if err != nil {
		return err
	}
	defer cc.Stop()
	c := &ceiling{js: js, prefix: prefix, bucket: prefix + "_state", nodes: nodes}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, concurrency)
	for range concurrency {
		go func() {
			for {
				select {
				case <-ctx.Done():
					errs <- nil
					return
				case m := <-jobs:
					if err := c.execute(ctx, m); err != nil && ctx.Err() == nil {
						_ = m.Nak()
						errs <- err
						return
					}
				}
			}
		}()
	}
	var first error
	for range concurrency {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel() // stop the others
		}
	}
	return first
}

type ceiling struct {
	js             jetstream.JetStream
	prefix, bucket string
	nodes          int
}

func (c *ceiling) execute(ctx context.Context, m jetstream.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var req contract.Request
	if err := json.Unmarshal(m.Data(), &req); err != nil {
		return m.Term()
	}
	wf, id := req.WorkflowID, req.RequestID
	now := time.Now().UTC()
	st := contract.Status{ExecutionID: id, WorkflowID: wf, RequestID: id, BotID: req.BotID, Status: contract.StatusRunning,
		Attempt: 1, WorkerID: "ceiling", CreatedAt: &now, StartedAt: &now, UpdatedAt: now}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	kvSubject := func(key string) string { return "$KV." + c.bucket + "." + key }

	// Round trip 1: the claim.
	ack, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: kvSubject(contract.StatusKey(wf, id)), Data: data,
		Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{"0"}}})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return m.Ack() // claimed before: a duplicate delivery
	}
	if err != nil {
		return fmt.Errorf("claim %s: %w", id, err)
	}
	claim := ack.Sequence

	// Round trip 2: everything else, pipelined.
	var futures []jetstream.PubAckFuture
	publish := func(subject string, v any, header nats.Header) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		f, err := c.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data, Header: header})
		if err != nil {
			return fmt.Errorf("publish to %s: %w", subject, err)
		}
		futures = append(futures, f)
		return nil
	}
	seq := uint64(0)
	event := func(typ, nodeID string, outputs map[string]any) error {
		seq++
		ev := contract.Event{Type: typ, EventID: id + "." + strconv.FormatUint(seq, 10), Seq: seq, Time: time.Now().UTC(),
			WorkflowID: wf, BotID: req.BotID, ExecutionID: id, CorrelationID: id, RequestID: id, NodeID: nodeID, Outputs: outputs}
		if nodeID != "" {
			ev.NodeType = "transform"
		}
		return publish(c.prefix+".events."+req.BotID+"."+wf+"."+id+"."+typ, ev, nats.Header{jetstream.MsgIDHeader: []string{ev.EventID}})
	}
	if err := event(contract.ExecutionStarted, "", nil); err != nil {
		return err
	}
	if err := publish(kvSubject(contract.LatestKey(wf)), id, nil); err != nil {
		return err
	}
	x, _ := req.Inputs["n"].(float64)
	outputs := map[string]map[string]any{}
	for i := range c.nodes {
		node := "n" + strconv.Itoa(i)
		if err := event(contract.NodeStarted, node, nil); err != nil {
			return err
		}
		x++
		out := map[string]any{"x": x}
		outputs[node] = out
		if err := event(contract.NodeCompleted, node, out); err != nil {
			return err
		}
	}
	if err := publish(kvSubject(contract.ResultKey(wf, id)), contract.Result{ExecutionID: id, WorkflowID: wf,
		Status: contract.StatusCompleted, Outputs: outputs}, nil); err != nil {
		return err
	}
	done := time.Now().UTC()
	st.Status, st.FinishedAt, st.UpdatedAt = contract.StatusCompleted, &done, done
	if err := publish(kvSubject(contract.StatusKey(wf, id)), st,
		nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(claim, 10)}}); err != nil {
		return err
	}
	if err := event(contract.ExecutionCompleted, "", nil); err != nil {
		return err
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("execution %s: %w", id, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return m.Ack()
}
