package contract

import (
	"encoding/json"
	"time"
)

// Request is an ExecutionRequest, published to flow.exec.<workflow_id>.<bot_id>.
type Request struct {
	RequestID     string          `json:"request_id,omitempty"`
	WorkflowID    string          `json:"workflow_id"`
	Workflow      json.RawMessage `json:"workflow,omitempty"`
	BotID         string          `json:"bot_id,omitempty"`
	StrategyID    string          `json:"strategy_id,omitempty"`
	Inputs        map[string]any  `json:"inputs,omitempty"`
	NotAfter      *time.Time      `json:"not_after,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
}

// Event types.
const (
	ExecutionStarted   = "execution_started"
	NodeStarted        = "node_started"
	NodeRetrying       = "node_retrying"
	NodeCompleted      = "node_completed"
	NodeFailed         = "node_failed"
	NodeSkipped        = "node_skipped"
	ExecutionCompleted = "execution_completed"
	ExecutionFailed    = "execution_failed"
	ExecutionHalted    = "execution_halted"
	ExecutionRejected  = "execution_rejected"
)

// IsTerminalEvent reports whether an event type ends an execution.
func IsTerminalEvent(eventType string) bool {
	switch eventType {
	case ExecutionCompleted, ExecutionFailed, ExecutionHalted, ExecutionRejected:
		return true
	}
	return false
}

// Event is a lifecycle event.
type Event struct {
	Type string `json:"type"`
	// ContractVersion is the contract version of the worker that published the event.
	ContractVersion string         `json:"contract_version"`
	EventID         string         `json:"event_id"`
	Seq             uint64         `json:"seq"`
	Time            time.Time      `json:"time"`
	WorkflowID      string         `json:"workflow_id"`
	WorkflowVersion uint64         `json:"workflow_version,omitempty"`
	BotID           string         `json:"bot_id"`
	StrategyID      string         `json:"strategy_id,omitempty"`
	ExecutionID     string         `json:"execution_id"`
	CorrelationID   string         `json:"correlation_id"`
	RequestID       string         `json:"request_id,omitempty"`
	NodeID          string         `json:"node_id,omitempty"`
	NodeType        string         `json:"node_type,omitempty"`
	Attempt         int            `json:"attempt,omitempty"`
	DelayMS         *int64         `json:"delay_ms,omitempty"`
	DurationMS      *int64         `json:"duration_ms,omitempty"`
	Error           *Error         `json:"error,omitempty"`
	Outputs         map[string]any `json:"outputs,omitempty"`
	Inputs          map[string]any `json:"inputs,omitempty"`
	Reason          string         `json:"reason,omitempty"`
	Resumed         bool           `json:"resumed,omitempty"`
	RestoredNodes   []string       `json:"restored_nodes,omitempty"`
	Traceparent     string         `json:"traceparent,omitempty"`
}

// Error describes a failure: a machine-readable kind and a message for people.
type Error struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Error kinds. Nodes and wrappers may add their own.
const (
	KindInvalidRequest  = "invalid_request"
	KindUnknownWorkflow = "unknown_workflow"
	KindInvalidWorkflow = "invalid_workflow"
	KindOversized       = "oversized"
	KindStale           = "stale"
	KindTimeout         = "timeout"
	KindCanceled        = "canceled"
	KindNodeError       = "node_error"
	KindMaxDeliveries   = "max_deliveries"
	KindHalted          = "halted"
	// KindCircuitOpen: a provider node failed at once, without a call, because its
	// provider's circuit breaker is open.
	KindCircuitOpen = "circuit_open"
	// KindWorkflowVersionGone: a resumed execution's workflow version is no longer
	// kept in flow_workflows.
	KindWorkflowVersionGone = "workflow_version_gone"
)

// Status values of an execution.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusHalted    = "halted"
)

// IsTerminalStatus reports whether an execution status is final.
func IsTerminalStatus(status string) bool {
	return status == StatusCompleted || status == StatusFailed || status == StatusHalted
}

// Status is the document at workflow.<wf>.execution.<exec>.status.
type Status struct {
	ExecutionID     string `json:"execution_id"`
	WorkflowID      string `json:"workflow_id"`
	WorkflowVersion uint64 `json:"workflow_version,omitempty"`
	RequestID       string `json:"request_id,omitempty"`
	BotID           string `json:"bot_id,omitempty"`
	StrategyID      string `json:"strategy_id,omitempty"`
	CorrelationID   string `json:"correlation_id,omitempty"`
	Status          string `json:"status"`
	Attempt         int    `json:"attempt,omitempty"`
	WorkerID        string `json:"worker_id,omitempty"`
	// StreamSeq is the FLOW_EXEC sequence of the request that owns the execution:
	// another request with the same request id is a duplicate, not a redelivery.
	StreamSeq     uint64     `json:"stream_seq,omitempty"`
	CreatedAt     *time.Time `json:"created_at,omitempty"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	UpdatedAt     time.Time  `json:"updated_at"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
	Error         *Error     `json:"error,omitempty"`
	TerminalEvent *Event     `json:"terminal_event,omitempty"`
}

// Result is the document at workflow.<wf>.execution.<exec>.result.
type Result struct {
	ExecutionID string                    `json:"execution_id"`
	WorkflowID  string                    `json:"workflow_id"`
	Status      string                    `json:"status"`
	Outputs     map[string]map[string]any `json:"outputs,omitempty"`
	Error       *Error                    `json:"error,omitempty"`
	FailedNode  string                    `json:"failed_node,omitempty"`
}

// Checkpoint states.
const (
	NodeStateCompleted = "completed"
	NodeStateSkipped   = "skipped"
	NodeStateFailed    = "failed"
)

// Checkpoint is the document at workflow.<wf>.execution.<exec>.node.<node>.
type Checkpoint struct {
	NodeID     string         `json:"node_id"`
	State      string         `json:"state"`
	Outputs    map[string]any `json:"outputs,omitempty"`
	Error      *Error         `json:"error,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Attempt    int            `json:"attempt,omitempty"`
	FinishedAt time.Time      `json:"finished_at"`
	// RunMS is how long the execution had run when the node finished, across
	// attempts: a resumed execution's workflow timeout counts on from it.
	RunMS int64 `json:"run_ms,omitempty"`
}

// DeadLetter is published to flow.dlq.<workflow_id> for a request that can never run.
type DeadLetter struct {
	Kind          string          `json:"kind"`
	Reason        string          `json:"reason"`
	Subject       string          `json:"subject"`
	WorkflowID    string          `json:"workflow_id,omitempty"`
	ExecutionID   string          `json:"execution_id,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	StreamSeq     uint64          `json:"stream_seq,omitempty"`
	Deliveries    uint64          `json:"deliveries,omitempty"`
	Time          time.Time       `json:"time"`
	Request       json.RawMessage `json:"request,omitempty"`
	Payload       string          `json:"payload,omitempty"`
	Truncated     bool            `json:"truncated,omitempty"`
	// LastStatus is the execution's status when it was dead-lettered: its last
	// attempt, worker and error.
	LastStatus *Status `json:"last_status,omitempty"`
}

// EmergencyCommand is published to flow.emergency.<scope>.
type EmergencyCommand struct {
	Action   string    `json:"action"`
	Reason   string    `json:"reason,omitempty"`
	IssuedBy string    `json:"issued_by,omitempty"`
	IssuedAt time.Time `json:"issued_at,omitzero"`
}

// Breaker states, scopes, sources and operators' actions.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"

	BreakerScopeLocal   = "local"
	BreakerScopeCluster = "cluster"

	// BreakerSourceBreaker: the breaker changed by itself (failures, probe).
	BreakerSourceBreaker = "breaker"
	// BreakerSourceOperator: the worker obeyed an operator's order.
	BreakerSourceOperator = "operator"

	BreakerActionOpen  = "open"
	BreakerActionClose = "close"
)

// BreakerState is published on flow.breakers.<provider> by a worker whose breaker
// for the provider changed state; in cluster scope it is also the value of
// state.<provider> in flow_breakers, which every worker follows.
type BreakerState struct {
	Provider string    `json:"provider"`
	State    string    `json:"state"`
	Previous string    `json:"previous,omitempty"`
	WorkerID string    `json:"worker_id"`
	Scope    string    `json:"scope"`
	Source   string    `json:"source"`
	Time     time.Time `json:"time"`
	// OpenUntil is when an open breaker lets a probe through; in cluster scope,
	// for half_open, until when the other workers wait for the probe's outcome.
	OpenUntil *time.Time `json:"open_until,omitempty"`
	// Reason is the last failure counted when the breaker opened, or the
	// operator's reason.
	Reason string `json:"reason,omitempty"`
}

// BreakerOverride is an operator's order about a provider's breaker, the value of
// override.<provider> in flow_breakers. Every worker obeys it: open refuses the
// provider's calls (until Until, when set); close lifts that and resets the
// provider's breakers to closed.
type BreakerOverride struct {
	Provider string     `json:"provider"`
	Action   string     `json:"action"`
	Reason   string     `json:"reason,omitempty"`
	IssuedBy string     `json:"issued_by,omitempty"`
	IssuedAt time.Time  `json:"issued_at"`
	Until    *time.Time `json:"until,omitempty"`
}
