package emergency

import (
	"strings"
	"testing"

	"github.com/flowguard/flowguard/internal/contract"
)

func TestOnlyResumeLiftsAHalt(t *testing.T) {
	b := Board{}
	steps := []struct {
		action, want string
		newlyHalted  bool
	}{
		{ActionPause, Paused, false},
		{ActionHalt, Halted, true},
		{ActionPause, Halted, false}, // ignored: only resume lifts a halt
		{ActionHalt, Halted, false},
		{ActionResume, Active, false},
		{ActionHalt, Halted, true},
	}
	for i, s := range steps {
		got := b.Apply("bot.b1", contract.EmergencyCommand{Action: s.action, Reason: s.action}, uint64(i+1))
		if st := b.Get("bot.b1"); st.State != s.want || got != s.newlyHalted {
			t.Fatalf("step %d (%s): state %s newly halted %v, want %s %v", i, s.action, st.State, got, s.want, s.newlyHalted)
		}
	}
	if st := b.Get("bot.b2"); st.State != Active {
		t.Errorf("an untouched scope is %s", st.State)
	}
}

func TestStrictestCoveringScope(t *testing.T) {
	b := Board{}
	b.Apply("strategy.s1", contract.EmergencyCommand{Action: ActionPause}, 1)
	b.Apply("bot.b1", contract.EmergencyCommand{Action: ActionHalt, Reason: "loss"}, 2)
	cases := []struct {
		scopes     Scopes
		state, who string
	}{
		{Scopes{BotID: "b1", StrategyID: "s1"}, Halted, "bot.b1"},
		{Scopes{BotID: "b2", StrategyID: "s1"}, Paused, "strategy.s1"},
		{Scopes{BotID: "b2", StrategyID: "s2", WorkflowID: "w"}, Active, ""},
	}
	for _, tc := range cases {
		if st := b.Strictest(tc.scopes.List()); st.State != tc.state || st.Scope != tc.who {
			t.Errorf("%+v: %s by %q, want %s by %q", tc.scopes, st.State, st.Scope, tc.state, tc.who)
		}
	}
}

func TestUnreadableCommandsFailClosed(t *testing.T) {
	for _, raw := range []string{`not json`, `{"action":"stop"}`, `{}`} {
		if cmd := DecodeCommand([]byte(raw)); cmd.Action != ActionHalt || !strings.Contains(cmd.Reason, "treated as halt") {
			t.Errorf("%s decoded as %+v, want a halt", raw, cmd)
		}
	}
	if cmd := DecodeCommand([]byte(`{"action":" Resume "}`)); cmd.Action != ActionResume {
		t.Errorf("action is not normalised: %+v", cmd)
	}
}

func TestCheckScope(t *testing.T) {
	for _, ok := range []string{"global", "bot.b1", "strategy.mean-revert", "workflow.w_1"} {
		if err := CheckScope(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "globl", "bot", "bot.", "user.x", "bot.a.b"} {
		if err := CheckScope(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
