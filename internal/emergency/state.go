// Package emergency is the emergency controller: it follows the emergency stream
// (halt, pause, resume per scope), cancels in-flight executions a halt covers, answers
// "can operate" and "can trade", and fails closed when it cannot confirm the current
// state or the stream was recreated. Risk limits, which halt scopes through it, are
// in package risk.
package emergency

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

// Actions of an emergency command.
const (
	ActionHalt   = "halt"
	ActionPause  = "pause"
	ActionResume = "resume"
)

// States of a scope.
const (
	Active = "active"
	Paused = "paused"
	Halted = "halted"
)

// Scope kinds; a scope is "global" or "<kind>.<id>".
const (
	ScopeGlobal   = "global"
	ScopeBot      = "bot"
	ScopeStrategy = "strategy"
	ScopeWorkflow = "workflow"
)

// ErrInvalidScope is returned for a scope that is not global, bot.<id>, strategy.<id> or workflow.<id>.
var ErrInvalidScope = errors.New("invalid scope")

// CheckScope validates a scope.
func CheckScope(scope string) error {
	if scope == ScopeGlobal {
		return nil
	}
	kind, id, ok := strings.Cut(scope, ".")
	if ok && (kind == ScopeBot || kind == ScopeStrategy || kind == ScopeWorkflow) && contract.CheckID(kind+" id", id) == nil {
		return nil
	}
	return fmt.Errorf("%w %q: use global, bot.<id>, strategy.<id> or workflow.<id>", ErrInvalidScope, scope)
}

// Scopes are the scopes that cover one execution.
type Scopes struct {
	BotID, StrategyID, WorkflowID string
}

// List returns the scopes covering s, broadest first.
func (s Scopes) List() []string {
	out := []string{ScopeGlobal}
	if s.BotID != "" {
		out = append(out, ScopeBot+"."+s.BotID)
	}
	if s.StrategyID != "" {
		out = append(out, ScopeStrategy+"."+s.StrategyID)
	}
	if s.WorkflowID != "" {
		out = append(out, ScopeWorkflow+"."+s.WorkflowID)
	}
	return out
}

// ScopeState is the state of one scope and the command that set it.
type ScopeState struct {
	Scope    string    `json:"scope"`
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	IssuedBy string    `json:"issued_by,omitempty"`
	IssuedAt time.Time `json:"issued_at,omitzero"`
	// Seq is the stream sequence of the command.
	Seq uint64 `json:"seq"`
	// Ignored says why the last command did not change the state (a pause while halted).
	Ignored string `json:"ignored,omitempty"`
	// AppliedAt is when this worker applied the command: for a halt, when every
	// execution it covers on this worker had been cancelled.
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// Board holds the state of every scope that ever received a command. Scopes without
// one are active. It is not safe for concurrent use.
type Board map[string]*ScopeState

// DecodeCommand reads a command. An unreadable one, or one with an unknown action,
// is returned as a halt whose reason says so: the controller fails closed.
func DecodeCommand(data []byte) contract.EmergencyCommand {
	var cmd contract.EmergencyCommand
	if err := json.Unmarshal(data, &cmd); err != nil {
		return contract.EmergencyCommand{Action: ActionHalt, Reason: fmt.Sprintf("unreadable emergency command (%v), treated as halt; publish a resume to lift it", err)}
	}
	cmd.Action = strings.ToLower(strings.TrimSpace(cmd.Action))
	switch cmd.Action {
	case ActionHalt, ActionPause, ActionResume:
	default:
		cmd.Reason = fmt.Sprintf("unknown emergency action %q, treated as halt; publish a resume to lift it (%s)", cmd.Action, cmd.Reason)
		cmd.Action = ActionHalt
	}
	return cmd
}

// Apply records a command for scope, and reports whether it newly halted the scope.
// Only a resume lifts a halt: a pause while halted is recorded as ignored.
func (b Board) Apply(scope string, cmd contract.EmergencyCommand, seq uint64) (halted bool) {
	prev := b[scope]
	next := &ScopeState{Scope: scope, Reason: cmd.Reason, IssuedBy: cmd.IssuedBy, IssuedAt: cmd.IssuedAt, Seq: seq}
	switch cmd.Action {
	case ActionHalt:
		next.State = Halted
	case ActionPause:
		next.State = Paused
		if prev != nil && prev.State == Halted {
			kept := *prev
			kept.Ignored = fmt.Sprintf("pause at seq %d ignored: only resume lifts a halt", seq)
			b[scope] = &kept
			return false
		}
	default:
		next.State = Active
	}
	b[scope] = next
	return next.State == Halted && (prev == nil || prev.State != Halted)
}

// ApplyMessage applies a command as stored on the subject of scope (the subject
// after "<prefix>.emergency."), and returns the scope it applied to. A command on
// an automatic halt subject (auto.<scope>) is applied as a halt of scope, whatever
// its action. A command whose subject names no valid scope is applied as a global
// halt: a typo in the subject, like one in the action, must not leave trading
// running.
func (b Board) ApplyMessage(scope string, data []byte, seq uint64) string {
	cmd := DecodeCommand(data)
	scope, auto := SubjectScope(scope)
	if auto && cmd.Action != ActionHalt {
		cmd.Reason = fmt.Sprintf("%s on an automatic halt subject, applied as a halt: only halts are published there; publish a resume for scope %s to lift it (%s)", cmd.Action, scope, cmd.Reason)
		cmd.Action = ActionHalt
	}
	if err := CheckScope(scope); err != nil {
		cmd.Action = ActionHalt
		cmd.Reason = fmt.Sprintf("emergency command on a subject that names no scope (%v), treated as a global halt; publish a resume for scope global to lift it", err)
		scope = ScopeGlobal
	}
	b.Apply(scope, cmd, seq)
	return scope
}

// SubjectScope returns the scope of an emergency subject's tail (the subject after
// "<prefix>.emergency."), and whether it is an automatic halt subject.
func SubjectScope(tail string) (scope string, auto bool) {
	if rest, ok := strings.CutPrefix(tail, contract.AutoHaltToken+"."); ok {
		return rest, true
	}
	return tail, false
}

// Get returns a scope's state; active when it never received a command.
func (b Board) Get(scope string) ScopeState {
	if s, ok := b[scope]; ok {
		return *s
	}
	return ScopeState{Scope: scope, State: Active}
}

// Strictest returns the most restrictive state among scopes: halted over paused
// over active, the broadest scope first among equals.
func (b Board) Strictest(scopes []string) ScopeState {
	best := ScopeState{State: Active}
	rank := map[string]int{Active: 0, Paused: 1, Halted: 2}
	for _, sc := range scopes {
		if s, ok := b[sc]; ok && rank[s.State] > rank[best.State] {
			best = *s
		}
	}
	return best
}
