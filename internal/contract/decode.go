package contract

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/flowguard/flowguard/schemas"
)

// Rejection is why a request can never run. It carries an error kind for events
// and dead letters.
type Rejection struct {
	Kind   string
	Reason string
}

func (r *Rejection) Error() string { return r.Kind + ": " + r.Reason }

// Reject builds a Rejection.
func Reject(kind, format string, args ...any) *Rejection {
	return &Rejection{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// DecodeRequest parses and validates a request received on subject. The subject's
// workflow and bot tokens must agree with the request's workflow_id and bot_id: the
// bot token is what NATS permissions vouch for. Every error it returns is a
// *Rejection.
func (s Subjects) DecodeRequest(subject string, data []byte) (*Request, error) {
	subjectWorkflowID, subjectBotID, err := s.ParseExec(subject)
	if err != nil {
		return nil, Reject(KindInvalidRequest, "%v", err)
	}
	// Parsed once: the document validated is the one the request is read from.
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, Reject(KindInvalidRequest, "request is not valid JSON: %v; publish one JSON object", err)
	}
	if err := schemas.Validate(schemas.ExecutionRequest, doc); err != nil {
		return nil, Reject(KindInvalidRequest, "request %v", err)
	}
	req, err := requestOf(doc.(map[string]any), data)
	if err != nil {
		return nil, Reject(KindInvalidRequest, "request cannot be decoded: %v", err)
	}
	if req.WorkflowID != subjectWorkflowID {
		return nil, Reject(KindInvalidRequest,
			"workflow_id %q does not match the subject's workflow %q; publish to the subject of the workflow you name",
			req.WorkflowID, subjectWorkflowID)
	}
	if req.BotID == NoBot {
		return nil, Reject(KindInvalidRequest, "bot_id %q is reserved for requests that name no bot; leave bot_id out", NoBot)
	}
	if req.BotID != subjectBotID && (req.BotID != "" || subjectBotID != NoBot) {
		return nil, Reject(KindInvalidRequest,
			"bot_id %q does not match the subject's bot %q; publish to %s with the credentials of that bot (the subject's last token is the bot the request runs as, %s for none)",
			req.BotID, subjectBotID, s.Exec(req.WorkflowID, req.BotID), NoBot)
	}
	return req, nil
}

// requestOf reads a request from its document, valid against the
// execution-request schema (so every field has its type); data is the document's
// JSON, from which an inline workflow is kept as it was sent.
func requestOf(doc map[string]any, data []byte) (*Request, error) {
	str := func(name string) string { s, _ := doc[name].(string); return s }
	req := &Request{
		RequestID: str("request_id"), WorkflowID: str("workflow_id"), BotID: str("bot_id"),
		StrategyID: str("strategy_id"), CorrelationID: str("correlation_id"),
	}
	req.Inputs, _ = doc["inputs"].(map[string]any)
	if s, ok := doc["not_after"].(string); ok {
		var t time.Time
		if err := t.UnmarshalText([]byte(s)); err != nil {
			return nil, fmt.Errorf("not_after: %v", err)
		}
		req.NotAfter = &t
	}
	if _, ok := doc["workflow"]; ok { // rare: decoded again, for its raw JSON
		var inline struct {
			Workflow json.RawMessage `json:"workflow"`
		}
		if err := json.Unmarshal(data, &inline); err != nil {
			return nil, err
		}
		req.Workflow = inline.Workflow
	}
	return req, nil
}
