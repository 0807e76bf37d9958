package logging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFormats: JSON for machines (auto on a file, a pipe), readable lines on
// request; the level filters.
func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		format string
		json   bool
	}{{"auto", true}, {"json", true}, {"console", false}} {
		t.Run(tc.format, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "log"))
			if err != nil {
				t.Fatal(err)
			}
			log, err := New(Options{Level: "info", Format: tc.format}, f)
			if err != nil {
				t.Fatal(err)
			}
			log.Debug().Msg("hidden")
			log.Info().Str("workflow_id", "wf").Msg("shown")
			_ = f.Close()
			data, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			out := strings.TrimSpace(string(data))
			if strings.Contains(out, "hidden") || !strings.Contains(out, "shown") || strings.Count(out, "\n") != 0 {
				t.Fatalf("want one info line:\n%s", out)
			}
			var v map[string]any
			if isJSON := json.Unmarshal([]byte(out), &v) == nil; isJSON != tc.json {
				t.Errorf("JSON %v, want %v:\n%s", isJSON, tc.json, out)
			}
		})
	}
	if _, err := New(Options{Level: "loud", Format: "json"}, os.Stderr); err == nil {
		t.Error("an unknown level was accepted")
	}
}
