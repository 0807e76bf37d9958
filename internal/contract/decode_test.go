package contract

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		name, subjectWF, body string
		wantErr               string // empty: valid
	}{
		{"minimal", "wf", `{"workflow_id":"wf"}`, ""},
		{"full", "wf", `{"request_id":"r-1","workflow_id":"wf","bot_id":"b1","strategy_id":"s_1","inputs":{"qty":0.5},"not_after":"2030-01-01T00:00:00Z","correlation_id":"c"}`, ""},
		{"inline workflow", "wf", `{"workflow_id":"wf","workflow":{"id":"wf","nodes":[{"id":"a","type":"delay"}]}}`, ""},
		{"not JSON", "wf", `{"workflow_id":`, "not valid JSON"},
		{"not an object", "wf", `[1,2]`, "/"},
		{"missing workflow id", "wf", `{"bot_id":"b"}`, "workflow_id"},
		{"bad bot id", "wf", `{"workflow_id":"wf","bot_id":"a.b"}`, "/bot_id"},
		{"too long id", "wf", `{"workflow_id":"wf","request_id":"` + strings.Repeat("r", 65) + `"}`, "/request_id"},
		{"bad time", "wf", `{"workflow_id":"wf","not_after":"tomorrow"}`, "/not_after"},
		{"unknown field", "wf", `{"workflow_id":"wf","priority":1}`, "priority"},
		{"inputs not an object", "wf", `{"workflow_id":"wf","inputs":[1]}`, "/inputs"},
		{"subject mismatch", "other", `{"workflow_id":"wf"}`, "does not match the subject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := DecodeRequest(tc.subjectWF, []byte(tc.body))
			if tc.wantErr == "" {
				if err != nil || req.WorkflowID != tc.subjectWF {
					t.Fatalf("req %+v err %v", req, err)
				}
				return
			}
			var rej *Rejection
			if !errors.As(err, &rej) || rej.Kind != KindInvalidRequest {
				t.Fatalf("err = %v, want an invalid_request rejection", err)
			}
			if !strings.Contains(rej.Reason, tc.wantErr) {
				t.Errorf("reason %q does not mention %q", rej.Reason, tc.wantErr)
			}
		})
	}
}

// FuzzDecodeRequest checks that decoding never panics, that every error is a
// Rejection, and that an accepted request has valid identifiers.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"workflow_id":"wf"}`,
		`{"request_id":"r-1","workflow_id":"wf","bot_id":"b1","inputs":{"a":[1,{"b":null}]},"not_after":"2030-01-01T00:00:00Z"}`,
		`{"workflow_id":"wf","workflow":{"id":"wf","nodes":[{"id":"a","type":"transform","config":{"outputs":{"x":"1"}}}]}}`,
		`{"workflow_id":"wf","inputs":{"n":1e400}}`,
		`{"workflow_id":"wf","bot_id":"\u0000"}`,
		`{}`, `null`, `"wf"`, ``,
	} {
		f.Add("wf", []byte(seed))
	}
	f.Fuzz(func(t *testing.T, subjectWF string, data []byte) {
		req, err := DecodeRequest(subjectWF, data)
		if err != nil {
			var rej *Rejection
			if !errors.As(err, &rej) || rej.Kind == "" || rej.Reason == "" {
				t.Fatalf("error %v is not a Rejection with kind and reason", err)
			}
			return
		}
		if req.WorkflowID != subjectWF {
			t.Fatalf("accepted workflow_id %q on the subject of %q", req.WorkflowID, subjectWF)
		}
		for field, v := range map[string]string{"workflow_id": req.WorkflowID, "request_id": req.RequestID, "bot_id": req.BotID, "strategy_id": req.StrategyID} {
			if v != "" || field == "workflow_id" {
				if err := CheckID(field, v); err != nil {
					t.Fatalf("accepted an invalid %s: %v", field, err)
				}
			}
		}
		if _, err := json.Marshal(req); err != nil {
			t.Fatalf("accepted request cannot be encoded again: %v", err)
		}
	})
}
