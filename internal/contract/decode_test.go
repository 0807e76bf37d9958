package contract

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		name, subject, body string
		wantErr             string // empty: valid
	}{
		{"minimal", "flow.exec.wf._", `{"workflow_id":"wf"}`, ""},
		{"full", "flow.exec.wf.b1", `{"request_id":"r-1","workflow_id":"wf","bot_id":"b1","strategy_id":"s_1","inputs":{"qty":0.5},"not_after":"2030-01-01T00:00:00Z","correlation_id":"c"}`, ""},
		{"inline workflow", "flow.exec.wf._", `{"workflow_id":"wf","workflow":{"id":"wf","nodes":[{"id":"a","type":"delay"}]}}`, ""},
		{"not JSON", "flow.exec.wf._", `{"workflow_id":`, "not valid JSON"},
		{"not an object", "flow.exec.wf._", `[1,2]`, "/"},
		{"missing workflow id", "flow.exec.wf.b", `{"bot_id":"b"}`, "workflow_id"},
		{"bad bot id", "flow.exec.wf._", `{"workflow_id":"wf","bot_id":"a.b"}`, "/bot_id"},
		{"too long id", "flow.exec.wf._", `{"workflow_id":"wf","request_id":"` + strings.Repeat("r", 65) + `"}`, "/request_id"},
		{"bad time", "flow.exec.wf._", `{"workflow_id":"wf","not_after":"tomorrow"}`, "/not_after"},
		{"unknown field", "flow.exec.wf._", `{"workflow_id":"wf","priority":1}`, "priority"},
		{"inputs not an object", "flow.exec.wf._", `{"workflow_id":"wf","inputs":[1]}`, "/inputs"},
		{"subject mismatch", "flow.exec.other._", `{"workflow_id":"wf"}`, "does not match the subject"},
		{"subject without a bot token", "flow.exec.wf", `{"workflow_id":"wf"}`, "flow.exec.<workflow_id>.<bot_id>"},
		{"bot of another subject", "flow.exec.wf.b1", `{"workflow_id":"wf","bot_id":"b2"}`, "publish to flow.exec.wf.b2 with the credentials of that bot"},
		{"bot on the subject of none", "flow.exec.wf._", `{"workflow_id":"wf","bot_id":"b2"}`, "does not match the subject's bot"},
		{"no bot on a bot's subject", "flow.exec.wf.b1", `{"workflow_id":"wf"}`, "does not match the subject's bot"},
		{"the reserved bot token", "flow.exec.wf._", `{"workflow_id":"wf","bot_id":"_"}`, "reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := Subjects{Prefix: DefaultPrefix}.DecodeRequest(tc.subject, []byte(tc.body))
			if tc.wantErr == "" {
				if err != nil || (Subjects{Prefix: DefaultPrefix}).Exec(req.WorkflowID, req.BotID) != tc.subject {
					t.Fatalf("req %+v err %v", req, err)
				}
				var want Request
				if err := json.Unmarshal([]byte(tc.body), &want); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(*req, want) {
					t.Errorf("decoded %+v, want %+v as encoding/json decodes it", *req, want)
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
		f.Add("wf", "_", []byte(seed))
	}
	f.Add("wf", "b1", []byte(`{"workflow_id":"wf","bot_id":"b1"}`))
	subjects := Subjects{Prefix: DefaultPrefix}
	f.Fuzz(func(t *testing.T, subjectWF, subjectBot string, data []byte) {
		req, err := subjects.DecodeRequest(subjects.Exec(subjectWF, subjectBot), data)
		if err != nil {
			var rej *Rejection
			if !errors.As(err, &rej) || rej.Kind == "" || rej.Reason == "" {
				t.Fatalf("error %v is not a Rejection with kind and reason", err)
			}
			return
		}
		if req.WorkflowID != subjectWF || subjects.Exec(req.WorkflowID, req.BotID) != subjects.Exec(subjectWF, subjectBot) {
			t.Fatalf("accepted workflow_id %q, bot_id %q on the subject of %q, %q", req.WorkflowID, req.BotID, subjectWF, subjectBot)
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

func TestValidTraceparent(t *testing.T) {
	for v, want := range map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": true,
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": false, // upper case
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": false, // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01": false, // zero span id
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": false, // invalid version
		"garbage": false, "": false,
	} {
		if got := ValidTraceparent(v); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
}
