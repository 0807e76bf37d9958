package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/schemas"
)

// TestExamplesValidateAndRun checks every example workflow and its sample request
// against the schemas, deploys it and runs the request to completion.
func TestExamplesValidateAndRun(t *testing.T) {
	defs, err := filepath.Glob("../examples/workflows/*.json")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.startWorker("w1", nil)
	found := 0
	for _, path := range defs {
		if strings.HasSuffix(path, ".request.json") {
			continue
		}
		found++
		t.Run(filepath.Base(path), func(t *testing.T) {
			def, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.ValidateJSON(schemas.Workflow, def); err != nil {
				t.Fatal(err)
			}
			reqPath := strings.TrimSuffix(path, ".json") + ".request.json"
			reqData, err := os.ReadFile(reqPath)
			if err != nil {
				t.Fatalf("every example needs a sample request beside it: %v", err)
			}
			if err := schemas.ValidateJSON(schemas.ExecutionRequest, reqData); err != nil {
				t.Fatalf("%s: %v", reqPath, err)
			}
			h.deploy(string(def))
			var req contract.Request
			if err := json.Unmarshal(reqData, &req); err != nil {
				t.Fatal(err)
			}
			id := h.submit(&req)
			st := h.waitStatus(req.WorkflowID, id, 20*time.Second)
			if st.Status != contract.StatusCompleted {
				t.Fatalf("%s ended %s: %+v", req.WorkflowID, st.Status, st.Error)
			}
		})
	}
	if found < 2 {
		t.Errorf("found %d example workflows, want at least 2", found)
	}
}
