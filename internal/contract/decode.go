package contract

import (
	"encoding/json"
	"fmt"

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

// DecodeRequest parses and validates a request received on the subject of
// subjectWorkflowID. Every error it returns is a *Rejection.
func DecodeRequest(subjectWorkflowID string, data []byte) (*Request, error) {
	doc, err := schemas.ParseJSON(data)
	if err != nil {
		return nil, Reject(KindInvalidRequest, "request is %v; publish one JSON object", err)
	}
	if err := schemas.Validate(schemas.ExecutionRequest, doc); err != nil {
		return nil, Reject(KindInvalidRequest, "request %v", err)
	}
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, Reject(KindInvalidRequest, "request cannot be decoded: %v", err)
	}
	if req.WorkflowID != subjectWorkflowID {
		return nil, Reject(KindInvalidRequest,
			"workflow_id %q does not match the subject's workflow %q; publish to the subject of the workflow you name",
			req.WorkflowID, subjectWorkflowID)
	}
	return &req, nil
}
