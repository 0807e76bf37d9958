package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/worker"
)

// discoveryQuiet is how long the discovery of the workers waits for one more answer
// after the last, as `nats micro ls` does: the NATS way to list a service's instances.
const discoveryQuiet = 500 * time.Millisecond

// workerStatuses returns the status endpoint subject of every running worker, as
// the workers answer the flowguard-worker micro service's INFO request.
func workerStatuses(ctx context.Context, nc *nats.Conn) ([]string, error) {
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject, err := micro.ControlSubject(micro.InfoVerb, worker.ServiceName, "")
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("ask the workers for their status endpoints: %w", err)
	}
	var subjects []string
	// The first answer may take long on a busy machine; after it, the others follow.
	wait := time.NewTimer(60 * time.Second)
	defer wait.Stop()
	for {
		select {
		case m := <-replies:
			var info micro.Info
			if err := json.Unmarshal(m.Data, &info); err != nil {
				return nil, fmt.Errorf("a worker's service info: %w", err)
			}
			for _, e := range info.Endpoints {
				if e.Name == "status" {
					subjects = append(subjects, e.Subject)
				}
			}
			wait.Reset(discoveryQuiet)
		case <-wait.C:
			if len(subjects) == 0 {
				return nil, errors.New("no worker answered the flowguard-worker micro service within 60s: start one")
			}
			return subjects, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// waitRiskApplied waits until every running worker has applied the risk limits of
// scope as they are now in the flow_risk bucket: a change of the limits is in force
// on a worker once the flow_risk revision its status reports reaches the change's.
func (d *demo) waitRiskApplied(ctx context.Context, scope string) error {
	kv, err := d.js.KeyValue(ctx, contract.BucketRisk)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", contract.BucketRisk, err)
	}
	e, err := kv.Get(ctx, contract.RiskLimitsKey(scope))
	if err != nil {
		return fmt.Errorf("read the risk limits of %s: %w", scope, err)
	}
	statuses, err := workerStatuses(ctx, d.nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, subject := range statuses {
		for {
			applied, err := riskRevision(d.nc, subject)
			if err == nil && applied >= e.Revision() {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the worker at %s has not applied the risk limits of %s (flow_risk revision %d) within 60s: it has revision %d (%v); is its risk watch running?", subject, scope, e.Revision(), applied, err)
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// riskRevision asks a worker's status endpoint for the flow_risk revision it has applied.
func riskRevision(nc *nats.Conn, statusSubject string) (uint64, error) {
	reply, err := nc.Request(statusSubject, nil, 5*time.Second)
	if err != nil {
		return 0, err
	}
	var st struct {
		RiskRevision uint64 `json:"risk_revision"`
	}
	if err := json.Unmarshal(reply.Data, &st); err != nil {
		return 0, fmt.Errorf("decode the status from %s: %w", statusSubject, err)
	}
	return st.RiskRevision, nil
}
