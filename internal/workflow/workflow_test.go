package workflow

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRejectsBadDefinitionsNamingTheNode(t *testing.T) {
	cases := []struct {
		name, def string
		want      []string // substrings of the error
	}{
		{"duplicate id", `{"id":"w","nodes":[{"id":"a","type":"t"},{"id":"a","type":"t"}]}`, []string{`node "a"`, "duplicate"}},
		{"unknown dependency", `{"id":"w","nodes":[{"id":"a","type":"t","depends_on":["ghost"]}]}`, []string{`node "a"`, `unknown node "ghost"`}},
		{"self dependency", `{"id":"w","nodes":[{"id":"a","type":"t","depends_on":["a"]}]}`, []string{`node "a"`, "cycle a -> a"}},
		{"cycle", `{"id":"w","nodes":[{"id":"a","type":"t","depends_on":["c"]},{"id":"b","type":"t","depends_on":["a"]},{"id":"c","type":"t","depends_on":["b"]}]}`, []string{"cycle", "a -> c -> b -> a"}},
		{"dependency listed twice", `{"id":"w","nodes":[{"id":"a","type":"t"},{"id":"b","type":"t","depends_on":["a","a"]}]}`, []string{`node "b"`, "twice"}},
		{"missing node id", `{"id":"w","nodes":[{"type":"t"}]}`, []string{"/nodes/0", "id"}},
		{"bad node id", `{"id":"w","nodes":[{"id":"a b","type":"t"}]}`, []string{"/nodes/0/id"}},
		{"no nodes", `{"id":"w","nodes":[]}`, []string{"/nodes"}},
		{"bad timeout", `{"id":"w","timeout":"soon","nodes":[{"id":"a","type":"t"}]}`, []string{"/timeout"}},
		{"unknown field", `{"id":"w","nodes":[{"id":"a","type":"t","retries":3}]}`, []string{"retries"}},
		{"retry waits reversed", `{"id":"w","nodes":[{"id":"a","type":"t","retry":{"min_wait":"5s","max_wait":"1s"}}]}`, []string{`node "a"`, "retry.min_wait (5s) is longer than retry.max_wait (1s)"}},
		{"provider not an id", `{"id":"w","nodes":[{"id":"a","type":"t","provider":"api.binance.com"}]}`, []string{"/nodes/0/provider"}},
		{"not JSON", `{"id":`, []string{"not valid JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.def))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseAcceptsAValidDAG(t *testing.T) {
	def, err := Parse([]byte(`{"id":"w","timeout":"2s","nodes":[
		{"id":"a","type":"t","timeout":"150ms","retry":{"max_attempts":3,"min_wait":"1s"}},
		{"id":"b","type":"t","depends_on":["a"]},
		{"id":"c","type":"t","depends_on":["a","b"],"continue_on_error":true}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if def.TimeoutOrDefault() != 2*time.Second || time.Duration(def.Nodes[0].Timeout) != 150*time.Millisecond || def.Nodes[0].Retry.MaxAttempts != 3 || !def.Nodes[2].ContinueOnError {
		t.Errorf("parsed %+v", def)
	}
}
