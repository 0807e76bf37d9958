// Package contract holds flowguard's public contract: subjects, stream and bucket
// names, headers, identifiers and the messages exchanged with users. It has no
// behaviour beyond naming, decoding and validating; docs/contract.md describes it.
package contract

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Version is the version of the contract this code speaks (docs/contract.md). Workers
// publish it in their micro service metadata and in every event, so that a fleet
// running two versions during an upgrade can be noticed.
const Version = "4"

// Stream and bucket names.
const (
	StreamExec      = "FLOW_EXEC"
	StreamEvents    = "FLOW_EVENTS"
	StreamEmergency = "FLOW_EMERGENCY"
	StreamOrders    = "FLOW_ORDERS"
	StreamDLQ       = "FLOW_DLQ"

	BucketState     = "flow_state"
	BucketWorkflows = "flow_workflows"
	BucketRisk      = "flow_risk"
	BucketBreakers  = "flow_breakers"
)

// MetadataRecreated is the stream metadata key that marks an emergency stream
// recreated by `publisher emergency init`: until a resume of scope global is
// stored in it, every worker counts it as a global halt.
const MetadataRecreated = "flowguard_recreated"

// Headers set on every message of an execution.
const (
	HeaderCorrelationID = "Correlation-Id"
	HeaderMsgID         = "Nats-Msg-Id"
	// HeaderTraceparent is the W3C trace context header; a request's is carried onto
	// every event and order intent of its execution.
	HeaderTraceparent = "traceparent"
)

var traceparentPattern = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// ValidTraceparent reports whether v is a W3C traceparent header value.
func ValidTraceparent(v string) bool {
	return traceparentPattern.MatchString(v) && v[:2] != "ff" &&
		v[3:35] != "00000000000000000000000000000000" && v[36:52] != "0000000000000000"
}

// RequestMsgID is the Nats-Msg-Id of an execution request: the stream stores a
// request once per workflow and request id within its duplicate window.
func RequestMsgID(workflowID, requestID string) string { return workflowID + "." + requestID }

// WorkerService is the NATS micro service every worker registers as: its INFO,
// PING and STATS requests list the fleet, and its status endpoint answers each
// worker's status document.
const WorkerService = "flowguard-worker"

// NoBot is the bot_id token of a request that names no bot.
const NoBot = "_"

// ErrInvalidID is returned for an identifier that cannot be a subject token or KV key part.
var ErrInvalidID = errors.New("invalid identifier")

// CheckID returns an error naming field when value is not a valid identifier:
// 1 to 64 of A-Z a-z 0-9 _ -.
func CheckID(field, value string) error {
	valid := len(value) >= 1 && len(value) <= 64
	for i := 0; valid && i < len(value); i++ {
		c := value[i]
		valid = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if valid {
		return nil
	}
	return fmt.Errorf("%w: %s %q must be 1 to 64 of A-Z a-z 0-9 _ -", ErrInvalidID, field, value)
}

// Subjects builds the subjects of the contract under a configurable prefix (default "flow").
type Subjects struct{ Prefix string }

// DefaultPrefix is the subject prefix of the contract.
const DefaultPrefix = "flow"

// Exec is the subject of a bot's execution requests for a workflow:
// <prefix>.exec.<workflow_id>.<bot_id>, with NoBot for a request that names no bot.
// The bot token is the request's identity: NATS permissions let a bot's
// credentials publish only on its own token, and a worker refuses a request whose
// bot_id disagrees with it.
func (s Subjects) Exec(workflowID, botID string) string {
	if botID == "" {
		botID = NoBot
	}
	return s.Prefix + ".exec." + workflowID + "." + botID
}

// ParseExec returns the workflow and bot tokens of an execution request subject;
// bot is NoBot for a request that names no bot. It fails for any other subject.
func (s Subjects) ParseExec(subject string) (workflowID, botID string, err error) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".exec.")
	if ok {
		workflowID, botID, ok = strings.Cut(rest, ".")
	}
	if !ok || CheckID("workflow_id", workflowID) != nil || CheckID("bot_id", botID) != nil {
		return "", "", fmt.Errorf("%w: subject %q is not %s.exec.<workflow_id>.<bot_id>; publish to it, with %s as bot_id when the request names no bot",
			ErrInvalidID, subject, s.Prefix, NoBot)
	}
	return workflowID, botID, nil
}

// ExecAll matches every execution request.
func (s Subjects) ExecAll() string { return s.Prefix + ".exec.>" }

// Event is the subject of one lifecycle event.
func (s Subjects) Event(botID, workflowID, executionID, eventType string) string {
	return s.Prefix + ".events." + botID + "." + workflowID + "." + executionID + "." + eventType
}

// EventFilter matches events; an empty part matches any value.
func (s Subjects) EventFilter(botID, workflowID, executionID string) string {
	return s.Prefix + ".events." + orAny(botID) + "." + orAny(workflowID) + "." + orAny(executionID) + ".*"
}

// EventsAll matches every event.
func (s Subjects) EventsAll() string { return s.Prefix + ".events.>" }

// Emergency is the subject of a scope's emergency commands, such as "global" or "bot.b1".
func (s Subjects) Emergency(scope string) string { return s.Prefix + ".emergency." + scope }

// AutoHalt is the subject of a worker's automatic halts of a scope (a breached risk
// limit): <prefix>.emergency.auto.<scope>. Every command stored there is applied
// as a halt, whatever its action, so the workers' credentials, which may publish
// only there, can halt but never resume or pause.
func (s Subjects) AutoHalt(scope string) string {
	return s.Prefix + ".emergency." + AutoHaltToken + "." + scope
}

// AutoHaltToken is the token after "emergency" of the automatic halt subjects.
const AutoHaltToken = "auto"

// EmergencyAll matches every emergency command.
func (s Subjects) EmergencyAll() string { return s.Prefix + ".emergency.>" }

// Orders is the subject of a bot's order intents.
func (s Subjects) Orders(botID string) string { return s.Prefix + ".orders." + botID }

// OrdersAll matches every order intent.
func (s Subjects) OrdersAll() string { return s.Prefix + ".orders.>" }

// DLQ is the dead-letter subject of a workflow.
func (s Subjects) DLQ(workflowID string) string { return s.Prefix + ".dlq." + workflowID }

// DLQAll matches every dead letter.
func (s Subjects) DLQAll() string { return s.Prefix + ".dlq.>" }

// Breakers is the subject of a provider's circuit breaker state changes.
func (s Subjects) Breakers(provider string) string { return s.Prefix + ".breakers." + provider }

// BreakersAll matches every breaker state change.
func (s Subjects) BreakersAll() string { return s.Prefix + ".breakers.>" }

func orAny(token string) string {
	if token == "" {
		return "*"
	}
	return token
}

// KV keys of the flow_state bucket.

// StatusKey is the key of an execution's status document.
func StatusKey(workflowID, executionID string) string {
	return "workflow." + workflowID + ".execution." + executionID + ".status"
}

// ResultKey is the key of an execution's result document.
func ResultKey(workflowID, executionID string) string {
	return "workflow." + workflowID + ".execution." + executionID + ".result"
}

// CheckpointKey is the key of a finished node's checkpoint.
func CheckpointKey(workflowID, executionID, nodeID string) string {
	return "workflow." + workflowID + ".execution." + executionID + ".node." + nodeID
}

// CheckpointPrefix matches every checkpoint of an execution.
func CheckpointPrefix(workflowID, executionID string) string {
	return "workflow." + workflowID + ".execution." + executionID + ".node.>"
}

// OrderMarkKey is the key recording an order node's intent and, once stored, its
// stream sequence: an order is published once for as long as the state is kept.
func OrderMarkKey(workflowID, executionID, nodeID string) string {
	return "workflow." + workflowID + ".execution." + executionID + ".order." + nodeID
}

// LatestKey is the key holding the id of a workflow's latest execution.
func LatestKey(workflowID string) string { return "workflow." + workflowID + ".latest_execution" }

// KV keys of the flow_breakers bucket.

// BreakerOverrideKey is the key of an operator's order about a provider's breaker.
func BreakerOverrideKey(provider string) string { return breakerOverridePrefix + provider }

// BreakerStateKey is the key of a provider's last breaker state change reported by
// a worker in cluster scope.
func BreakerStateKey(provider string) string { return breakerStatePrefix + provider }

const (
	breakerOverridePrefix = "override."
	breakerStatePrefix    = "state."
)

// ParseBreakerKey splits a flow_breakers key into what it holds, "override" or
// "state", and the provider; ok is false for any other key.
func ParseBreakerKey(key string) (what, provider string, ok bool) {
	if p, found := strings.CutPrefix(key, breakerOverridePrefix); found && CheckID("provider", p) == nil {
		return "override", p, true
	}
	if p, found := strings.CutPrefix(key, breakerStatePrefix); found && CheckID("provider", p) == nil {
		return "state", p, true
	}
	return "", "", false
}

// HaltError is the cancellation cause of an execution stopped by an emergency halt.
type HaltError struct {
	Scope  string
	Reason string
}

func (h *HaltError) Error() string {
	if h.Reason == "" {
		return "halted by " + h.Scope
	}
	return "halted by " + h.Scope + ": " + h.Reason
}
