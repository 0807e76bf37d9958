package worker

import (
	"encoding/json"
	"regexp"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/metrics"
)

// ServiceName is the NATS micro service every worker registers as, so that
// `nats micro ls`, `info` and `stats` list the fleet.
const ServiceName = contract.WorkerService

// serviceStatus is what the status endpoint and the service stats report.
type serviceStatus struct {
	WorkerID  string          `json:"worker_id"`
	Ready     bool            `json:"ready"`
	NotReady  string          `json:"not_ready,omitempty"`
	Counts    metrics.Counts  `json:"executions"`
	Emergency emergency.Board `json:"emergency,omitempty"`
	// RiskRevision is the flow_risk revision of the last risk limits or metrics the
	// worker applied: a limit written at revision r is in force once it is r or more.
	RiskRevision uint64 `json:"risk_revision"`
}

var notSubjectToken = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// registerService registers the worker as a NATS micro service with a status
// endpoint on <prefix>.workers.<worker_id>.status.
func (w *Worker) registerService(nc *nats.Conn) (micro.Service, error) {
	status := func() serviceStatus {
		st := serviceStatus{WorkerID: w.cfg.WorkerID, Counts: w.metrics.Counts(), Emergency: w.ctrl.Board(), RiskRevision: w.risk.Revision()}
		if err := w.Readiness(); err != nil {
			st.NotReady = err.Error()
		} else {
			st.Ready = true
		}
		return st
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:         ServiceName,
		Version:      w.cfg.Version,
		Description:  "flowguard worker: runs workflows from " + w.subjects.ExecAll(),
		Metadata:     map[string]string{"contract_version": contract.Version, "worker_id": w.cfg.WorkerID, "prefix": w.cfg.Prefix, "concurrency": strconv.Itoa(w.cfg.Consumer.Concurrency)},
		StatsHandler: func(*micro.Endpoint) any { return status() },
	})
	if err != nil {
		return nil, err
	}
	subject := w.cfg.Prefix + ".workers." + notSubjectToken.ReplaceAllString(w.cfg.WorkerID, "_") + ".status"
	err = svc.AddEndpoint("status", micro.HandlerFunc(func(req micro.Request) {
		data, _ := json.Marshal(status())
		_ = req.Respond(data)
	}), micro.WithEndpointSubject(subject), micro.WithEndpointQueueGroupDisabled())
	if err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}
