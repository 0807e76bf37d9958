package schedule

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
)

// minLateness is the least a firing may be late, past the next firing's due
// time, and still run.
const minLateness = 5 * time.Second

// FiringID is the request id of a schedule's firing: the schedule's name and the
// second it fired, such as every-min-20261130T080000Z. Two firings are at least a
// second apart, so they never share an id; a firing delivered again keeps its id.
func FiringID(name string, fired time.Time) string {
	return name + "-" + fired.UTC().Truncate(time.Second).Format("20060102T150405Z")
}

// ParseFiringID returns the schedule name and firing time of a request id made by
// FiringID; ok is false for any other request id.
func ParseFiringID(id string) (name string, fired time.Time, ok bool) {
	const layout = "20060102T150405Z"
	i := len(id) - len(layout) - 1
	if i < 1 || id[i] != '-' {
		return "", time.Time{}, false
	}
	fired, err := time.Parse(layout, id[i+1:])
	if err != nil || checkName(id[:i]) != nil {
		return "", time.Time{}, false
	}
	return id[:i], fired, true
}

// firing is a firing presented as the execution request it stands for: subject
// <prefix>.exec.<workflow_id>.<bot_id>, and its request with request_id FiringID. Ack, Nak
// and the rest settle the firing itself.
type firing struct {
	jetstream.Msg
	subject string
	data    []byte
}

func (f *firing) Subject() string { return f.subject }
func (f *firing) Data() []byte    { return f.data }

// AsRequest returns the execution request a firing stands for, to be handled as
// any request from FLOW_EXEC is. It returns instead why the firing is too late to
// run, when its next firing was due more than a period (at least 5 s) before now,
// as after every worker was down: such firings are not replayed in a burst. A
// payload that is not a JSON object is passed on as it is, to be rejected and
// dead-lettered like any bad request.
func AsRequest(m jetstream.Msg, subjects contract.Subjects, now time.Time) (req jetstream.Msg, late string, err error) {
	meta, err := m.Metadata()
	if err != nil {
		return nil, "", fmt.Errorf("firing without JetStream metadata: %w", err)
	}
	workflowID, name, ok := strings.Cut(strings.TrimPrefix(m.Subject(), subjects.Prefix+".fired."), ".")
	if !ok || contract.CheckID("workflow_id", workflowID) != nil || checkName(name) != nil {
		return nil, "", fmt.Errorf("firing on %s, a subject that names no workflow and schedule (%s)", m.Subject(), subjects.Fired("<workflow_id>", "<name>"))
	}
	if late := lateness(m.Headers(), meta.Timestamp, now); late != "" {
		return nil, late, nil
	}
	data, botID := withRequestID(m.Data(), FiringID(name, meta.Timestamp))
	return &firing{Msg: m, subject: subjects.Exec(workflowID, botID), data: data}, "", nil
}

// lateness says why a firing is too late to run, "" when it may run.
func lateness(h nats.Header, fired, now time.Time) string {
	next, err := time.Parse(time.RFC3339Nano, h.Get(contract.HeaderScheduleNext))
	if err != nil {
		return "" // a one-off @at firing, or none said
	}
	allowed := max(next.Sub(fired), minLateness)
	if lag := now.Sub(next); lag > allowed {
		return fmt.Sprintf("fired at %s; the next firing was due %s ago", fired.UTC().Format(time.RFC3339), lag.Round(time.Second))
	}
	return ""
}

// withRequestID sets request_id in a request and returns it with the request's
// bot_id, the bot token of the subject it stands for ("" when it names none); a
// payload that is not a JSON object is returned as it is, to be rejected.
func withRequestID(data []byte, id string) ([]byte, string) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(data, &req); err != nil || req == nil {
		return data, ""
	}
	var botID string
	_ = json.Unmarshal(req["bot_id"], &botID) // not a string: the request is rejected as such
	req["request_id"], _ = json.Marshal(id)
	out, err := json.Marshal(req)
	if err != nil {
		return data, botID
	}
	return out, botID
}
