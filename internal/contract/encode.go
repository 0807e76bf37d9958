package contract

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// MarshalEvent returns the same bytes as json.Marshal(ev), without reflection:
// a worker publishes several events per execution, and encoding them was the
// largest share of its CPU. Outputs of other types than JSON's own, and strings
// that need escaping, go through encoding/json.
func MarshalEvent(ev *Event) ([]byte, error) {
	if !encoders().event {
		return json.Marshal(ev)
	}
	b := make([]byte, 0, 512)
	b = appendField(b, `{"type":`, ev.Type)
	b = appendField(b, `,"contract_version":`, ev.ContractVersion)
	b = appendField(b, `,"event_id":`, ev.EventID)
	b = strconv.AppendUint(append(b, `,"seq":`...), ev.Seq, 10)
	b, err := appendTime(append(b, `,"time":`...), ev.Time)
	if err != nil {
		return nil, fmt.Errorf("encode the event's time: %w", err)
	}
	b = appendField(b, `,"workflow_id":`, ev.WorkflowID)
	b = appendUint(b, `,"workflow_version":`, ev.WorkflowVersion)
	b = appendField(b, `,"bot_id":`, ev.BotID)
	b = appendOptional(b, `,"strategy_id":`, ev.StrategyID)
	b = appendField(b, `,"execution_id":`, ev.ExecutionID)
	b = appendField(b, `,"correlation_id":`, ev.CorrelationID)
	b = appendOptional(b, `,"request_id":`, ev.RequestID)
	b = appendOptional(b, `,"node_id":`, ev.NodeID)
	b = appendOptional(b, `,"node_type":`, ev.NodeType)
	b = appendInt(b, `,"attempt":`, int64(ev.Attempt))
	if ev.DelayMS != nil {
		b = strconv.AppendInt(append(b, `,"delay_ms":`...), *ev.DelayMS, 10)
	}
	if ev.DurationMS != nil {
		b = strconv.AppendInt(append(b, `,"duration_ms":`...), *ev.DurationMS, 10)
	}
	b = appendError(b, ev.Error)
	if len(ev.Outputs) > 0 {
		if b, err = appendValue(append(b, `,"outputs":`...), ev.Outputs); err != nil {
			return nil, err
		}
	}
	b = appendOptional(b, `,"reason":`, ev.Reason)
	if ev.Resumed {
		b = append(b, `,"resumed":true`...)
	}
	if len(ev.RestoredNodes) > 0 {
		b = append(b, `,"restored_nodes":[`...)
		for i, n := range ev.RestoredNodes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, n)
		}
		b = append(b, ']')
	}
	b = appendOptional(b, `,"traceparent":`, ev.Traceparent)
	return append(b, '}'), nil
}

// MarshalCheckpoint returns the same bytes as json.Marshal(cp), without
// reflection (see MarshalEvent).
func MarshalCheckpoint(cp *Checkpoint) ([]byte, error) {
	if !encoders().checkpoint {
		return json.Marshal(cp)
	}
	b := make([]byte, 0, 256)
	b = appendField(b, `{"node_id":`, cp.NodeID)
	b = appendField(b, `,"state":`, cp.State)
	var err error
	if len(cp.Outputs) > 0 {
		if b, err = appendValue(append(b, `,"outputs":`...), cp.Outputs); err != nil {
			return nil, err
		}
	}
	b = appendError(b, cp.Error)
	b = appendOptional(b, `,"reason":`, cp.Reason)
	b = appendInt(b, `,"attempt":`, int64(cp.Attempt))
	if b, err = appendTime(append(b, `,"finished_at":`...), cp.FinishedAt); err != nil {
		return nil, fmt.Errorf("encode the checkpoint's time: %w", err)
	}
	b = appendInt(b, `,"run_ms":`, cp.RunMS)
	return append(b, '}'), nil
}

// MarshalStatus returns the same bytes as json.Marshal(st), without reflection
// (see MarshalEvent).
func MarshalStatus(st *Status) ([]byte, error) {
	if !encoders().status || !encoders().event {
		return json.Marshal(st)
	}
	b := make([]byte, 0, 512)
	b = appendField(b, `{"execution_id":`, st.ExecutionID)
	b = appendField(b, `,"workflow_id":`, st.WorkflowID)
	b = appendUint(b, `,"workflow_version":`, st.WorkflowVersion)
	b = appendOptional(b, `,"request_id":`, st.RequestID)
	b = appendOptional(b, `,"bot_id":`, st.BotID)
	b = appendOptional(b, `,"strategy_id":`, st.StrategyID)
	b = appendOptional(b, `,"correlation_id":`, st.CorrelationID)
	b = appendField(b, `,"status":`, st.Status)
	b = appendInt(b, `,"attempt":`, int64(st.Attempt))
	b = appendOptional(b, `,"worker_id":`, st.WorkerID)
	b = appendUint(b, `,"stream_seq":`, st.StreamSeq)
	var err error
	for _, t := range []struct {
		key string
		t   *time.Time
	}{{`,"created_at":`, st.CreatedAt}, {`,"started_at":`, st.StartedAt}, {`,"updated_at":`, &st.UpdatedAt}, {`,"finished_at":`, st.FinishedAt}} {
		if t.t == nil {
			continue
		}
		if b, err = appendTime(append(b, t.key...), *t.t); err != nil {
			return nil, fmt.Errorf("encode the status's times: %w", err)
		}
	}
	b = appendError(b, st.Error)
	if st.TerminalEvent != nil {
		ev, err := MarshalEvent(st.TerminalEvent)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"terminal_event":`...), ev...)
	}
	return append(b, '}'), nil
}

// The JSON fields, in order, that the encoders above write for each type.
var (
	eventFields = []string{"type", "contract_version", "event_id", "seq", "time", "workflow_id", "workflow_version",
		"bot_id", "strategy_id", "execution_id", "correlation_id", "request_id", "node_id", "node_type", "attempt",
		"delay_ms", "duration_ms", "error", "outputs", "reason", "resumed", "restored_nodes", "traceparent"}
	checkpointFields = []string{"node_id", "state", "outputs", "error", "reason", "attempt", "finished_at", "run_ms"}
	statusFields     = []string{"execution_id", "workflow_id", "workflow_version", "request_id", "bot_id", "strategy_id",
		"correlation_id", "status", "attempt", "worker_id", "stream_seq", "created_at", "started_at", "updated_at",
		"finished_at", "error", "terminal_event"}
)

// encoders tells, per type, whether its encoder writes every field the type
// has: a field added to a type and not to its encoder sends that type back to
// encoding/json, rather than dropping the field (TestEncodersCoverEveryField
// fails until the encoder writes it).
var encoders = sync.OnceValue(func() (ok struct{ event, checkpoint, status bool }) {
	ok.event = slices.Equal(jsonFields(reflect.TypeFor[Event]()), eventFields)
	ok.checkpoint = slices.Equal(jsonFields(reflect.TypeFor[Checkpoint]()), checkpointFields)
	ok.status = slices.Equal(jsonFields(reflect.TypeFor[Status]()), statusFields)
	return ok
})

// jsonFields lists the JSON names of a struct's fields, in order.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}

// appendError appends an optional error field.
func appendError(b []byte, e *Error) []byte {
	if e == nil {
		return b
	}
	b = appendField(b, `,"error":{"kind":`, e.Kind)
	return append(appendField(b, `,"message":`, e.Message), '}')
}

// appendInt appends a number field tagged omitempty.
func appendInt(b []byte, key string, n int64) []byte {
	if n == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), n, 10)
}

// appendUint appends a number field tagged omitempty.
func appendUint(b []byte, key string, n uint64) []byte {
	if n == 0 {
		return b
	}
	return strconv.AppendUint(append(b, key...), n, 10)
}

// appendTime appends t as time.Time's MarshalJSON writes it (RFC 3339 with
// nanoseconds, trailing zeros trimmed), and fails as it does.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		_, err := t.MarshalJSON()
		return nil, err
	}
	if _, offset := t.Zone(); offset <= -24*3600 || offset >= 24*3600 {
		_, err := t.MarshalJSON()
		return nil, err
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// appendValue appends v, a value decoded from JSON or built by a node (outputs),
// as encoding/json writes it: maps with sorted keys, floats in its format. Any
// other type goes through encoding/json.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case float64:
		return appendFloat(b, v)
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case map[string]any:
		if v == nil {
			return append(b, "null"...), nil
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, k), ':')
			var err error
			if b, err = appendValue(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, data...), nil
}

// appendFloat appends f as encoding/json writes a float64: the shortest form
// that reads back the same, in exponent form below 1e-6 and from 1e21.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, &json.UnsupportedValueError{Str: strconv.FormatFloat(f, 'g', -1, 64)}
	}
	abs, format := math.Abs(f), byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendField appends a key (with its punctuation) and a string value.
func appendField(b []byte, key, v string) []byte {
	return appendString(append(b, key...), v)
}

// appendOptional is appendField for a field tagged omitempty.
func appendOptional(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendField(b, key, v)
}

// appendString appends s as a JSON string, as encoding/json writes it: strings of
// printable ASCII that need no escape (ids, names, kinds) are copied; any other
// goes through encoding/json, which escapes HTML characters and invalid UTF-8.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
