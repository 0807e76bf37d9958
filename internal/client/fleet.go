package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
)

// WorkerStatus is a worker's status document, as its status endpoint answers it
// (docs/contract.md, "The workers' micro service").
type WorkerStatus struct {
	WorkerID  string          `json:"worker_id"`
	Ready     bool            `json:"ready"`
	NotReady  string          `json:"not_ready,omitempty"`
	Emergency emergency.Board `json:"emergency"`
	// RiskRevision is the flow_risk revision of the last limits or metrics the
	// worker applied.
	RiskRevision uint64 `json:"risk_revision"`
}

// discoveryQuiet is how long Workers waits for one more answer after the last, as
// `nats micro ls` does: the NATS way to list a service's instances.
const discoveryQuiet = 300 * time.Millisecond

// noResponders is the status (header "Status") the server answers a request
// nobody listens to with.
const noResponders = "503"

// Workers returns the status endpoint subject of every running worker of the
// client's prefix, as the workers answer the INFO request of their micro service
// (whose metadata names their prefix): it waits up to first for the first answer,
// then until no other comes for a moment. No answer is not an error: it returns
// none.
func (c *Client) Workers(ctx context.Context, first time.Duration) ([]string, error) {
	replies := make(chan *nats.Msg, 64)
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject, err := micro.ControlSubject(micro.InfoVerb, contract.WorkerService, "")
	if err != nil {
		return nil, err
	}
	if err := c.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("ask the workers for their status endpoints: %w", err)
	}
	var subjects []string
	wait := time.NewTimer(first)
	defer wait.Stop()
	for {
		select {
		case m := <-replies:
			if len(m.Data) == 0 && m.Header.Get("Status") == noResponders {
				return subjects, nil // no worker listens
			}
			var info micro.Info
			if err := json.Unmarshal(m.Data, &info); err != nil {
				return nil, fmt.Errorf("a worker's service info: %w", err)
			}
			if p := info.Metadata["prefix"]; p != "" && p != c.subjects.Prefix {
				wait.Reset(discoveryQuiet)
				continue // a worker of another deployment on the same server
			}
			for _, e := range info.Endpoints {
				if e.Name == "status" {
					subjects = append(subjects, e.Subject)
				}
			}
			wait.Reset(discoveryQuiet)
		case <-wait.C:
			return subjects, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// statusTimeout bounds one status request: a worker answers it from memory.
const statusTimeout = 5 * time.Second

// WorkerStatus asks the worker whose status endpoint is subject for its status.
func (c *Client) WorkerStatus(ctx context.Context, subject string) (*WorkerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	reply, err := c.nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		return nil, fmt.Errorf("status of the worker at %s: %w", subject, err)
	}
	var st WorkerStatus
	if err := json.Unmarshal(reply.Data, &st); err != nil {
		return nil, fmt.Errorf("status of the worker at %s: %w", subject, err)
	}
	return &st, nil
}
