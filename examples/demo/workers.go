package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

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
	// The first answer may take long on a busy machine; after it, the others follow.
	statuses, err := d.client.Workers(ctx, 60*time.Second)
	if err != nil {
		return err
	}
	if len(statuses) == 0 {
		return errors.New("no worker answered the flowguard-worker micro service within 60s: start one")
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, subject := range statuses {
		for {
			var applied uint64
			st, err := d.client.WorkerStatus(ctx, subject)
			if err == nil {
				applied = st.RiskRevision
			}
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
