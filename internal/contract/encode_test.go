package contract

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

// MarshalEvent must write exactly what encoding/json writes: readers and the
// status (which embeds the terminal event through encoding/json) see one form.
func TestMarshalEventMatchesEncodingJSON(t *testing.T) {
	delay, duration, zero := int64(250), int64(12), int64(0)
	full := Event{
		Type: NodeFailed, ContractVersion: Version, EventID: "r-1.7.3", Seq: 3,
		Time:       time.Date(2030, 1, 2, 3, 4, 5, 600700800, time.UTC),
		WorkflowID: "wf", WorkflowVersion: 4, BotID: "bot-1", StrategyID: "s_1", ExecutionID: "r-1",
		CorrelationID: "c-1", RequestID: "r-1", NodeID: "a", NodeType: "http", Attempt: 2,
		DelayMS: &delay, DurationMS: &duration, Error: &Error{Kind: KindTimeout, Message: "took > 5s & gave <up>"},
		Outputs: map[string]any{"z": 1.5, "a": []any{"x", nil, true}, "n": map[string]any{"k": "v\u2028"}},
		Reason:  "line\nbreak \"quoted\" \\ tab\t", Resumed: true, RestoredNodes: []string{"a", "b<c>"},
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	cases := map[string]Event{
		"full":              full,
		"empty":             {},
		"zero pointers":     {Type: NodeCompleted, DelayMS: &zero, DurationMS: &zero, Outputs: map[string]any{}},
		"non-ASCII":         {Type: NodeCompleted, Reason: "prix: 10 €, 値段", ExecutionID: "é"},
		"invalid UTF-8":     {Type: NodeCompleted, Reason: "bad \xff byte"},
		"control character": {Type: NodeCompleted, Reason: "bell \x07 and \x1f"},
		"local time":        {Type: ExecutionStarted, Time: time.Date(2030, 6, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))},
		"empty error":       {Type: ExecutionFailed, Error: &Error{}},
		"numbers": {Type: NodeCompleted, Outputs: map[string]any{
			"zero": 0.0, "negative zero": math.Copysign(0, -1), "big": 1e21, "just below": 999999999999999999999.0,
			"small": 1e-7, "smallest": 5e-324, "tiny": 0.000001, "fraction": 123456789.123, "negative": -2.5e-10,
			"int": 7, "int64": int64(-9), "nil map": map[string]any(nil), "nil list": []any(nil), "empty list": []any{},
			"other": []string{"typed", "slice"}, "struct": Error{Kind: "k"}, "quote\" key <&>": "v",
		}},
	}
	for name, ev := range cases {
		t.Run(name, func(t *testing.T) { sameAsEncodingJSON(t, &ev, MarshalEvent) })
	}
}

func TestMarshalCheckpointAndStatusMatchEncodingJSON(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	later := at.Add(time.Second)
	for name, cp := range map[string]Checkpoint{
		"empty":     {},
		"completed": {NodeID: "a", State: NodeStateCompleted, Outputs: map[string]any{"x": 2.0, "s": "<b>"}, Attempt: 2, FinishedAt: at, RunMS: 12},
		"failed":    {NodeID: "a", State: NodeStateFailed, Error: &Error{Kind: KindNodeError, Message: "500 \"oops\""}, Reason: "continue_on_error", FinishedAt: at},
	} {
		t.Run("checkpoint "+name, func(t *testing.T) { sameAsEncodingJSON(t, &cp, MarshalCheckpoint) })
	}
	duration := int64(4)
	for name, st := range map[string]Status{
		"empty": {},
		"running": {ExecutionID: "r-1", WorkflowID: "wf", WorkflowVersion: 3, RequestID: "r-1", BotID: "b", StrategyID: "s",
			CorrelationID: "c", Status: StatusRunning, Attempt: 1, WorkerID: "w-1", StreamSeq: 42, CreatedAt: &at, StartedAt: &at, UpdatedAt: at},
		"finished": {ExecutionID: "r-1", WorkflowID: "wf", Status: StatusFailed, UpdatedAt: later, FinishedAt: &later,
			Error:         &Error{Kind: KindTimeout, Message: "é & more"},
			TerminalEvent: &Event{Type: ExecutionFailed, Seq: 9, Time: later, DurationMS: &duration, Outputs: map[string]any{"a": map[string]any{"x": 1.0}}}},
	} {
		t.Run("status "+name, func(t *testing.T) { sameAsEncodingJSON(t, &st, MarshalStatus) })
	}
}

// sameAsEncodingJSON fails t when marshal(v) differs from json.Marshal(v).
func sameAsEncodingJSON[T any](t *testing.T, v *T, marshal func(*T) ([]byte, error)) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("differs from encoding/json:\ngot  %s\nwant %s", got, want)
	}
}

func TestMarshalEventRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for name, ev := range map[string]Event{
		"year 10000":  {Type: NodeStarted, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"zone +24h":   {Type: NodeStarted, Time: time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("z", 24*3600))},
		"NaN output":  {Type: NodeCompleted, Outputs: map[string]any{"x": math.NaN()}},
		"Inf in list": {Type: NodeCompleted, Outputs: map[string]any{"x": []any{math.Inf(1)}}},
		"channel":     {Type: NodeCompleted, Outputs: map[string]any{"x": make(chan int)}},
	} {
		if _, err := json.Marshal(&ev); err == nil {
			t.Fatalf("%s: encoding/json accepts it; the case is wrong", name)
		}
		if _, err := MarshalEvent(&ev); err == nil {
			t.Errorf("%s: MarshalEvent encoded it; encoding/json refuses it", name)
		}
	}
}

// BenchmarkMarshalEvent compares MarshalEvent with encoding/json on a
// node_completed event.
func BenchmarkMarshalEvent(b *testing.B) {
	duration := int64(3)
	ev := Event{Type: NodeCompleted, ContractVersion: Version, EventID: "r-1.7.3", Seq: 3, Time: time.Now().UTC(),
		WorkflowID: "bench3", WorkflowVersion: 1, BotID: NoBot, ExecutionID: "r-1", CorrelationID: "exec_bench3_r-1",
		RequestID: "r-1", NodeID: "b", NodeType: "transform", Attempt: 1, DurationMS: &duration, Outputs: map[string]any{"x": 4.0}}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("MarshalEvent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := MarshalEvent(&ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A field added to Event, Checkpoint or Status must be added to its encoder
// (and its list of fields in encode.go); until it is, that type is encoded by
// encoding/json, slower but whole.
func TestEncodersCoverEveryField(t *testing.T) {
	for _, c := range []struct {
		name  string
		typ   reflect.Type
		known []string
	}{
		{"Event (MarshalEvent, eventFields)", reflect.TypeFor[Event](), eventFields},
		{"Checkpoint (MarshalCheckpoint, checkpointFields)", reflect.TypeFor[Checkpoint](), checkpointFields},
		{"Status (MarshalStatus, statusFields)", reflect.TypeFor[Status](), statusFields},
	} {
		if have := jsonFields(c.typ); !slices.Equal(have, c.known) {
			t.Errorf("%s: the type's fields are %v, the encoder writes %v: add the new fields to the encoder, in order", c.name, have, c.known)
		}
	}
	if ok := encoders(); !ok.event || !ok.checkpoint || !ok.status {
		t.Errorf("a fast encoder is off: %+v", ok)
	}
}
