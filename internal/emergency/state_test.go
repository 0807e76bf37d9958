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

// A command on an automatic halt subject is a halt whatever its action: the
// workers, which may publish only there, cannot lift or soften a halt.
func TestAutoHaltSubjectsOnlyHalt(t *testing.T) {
	b := Board{}
	cmd := func(action string) []byte { return []byte(`{"action": "` + action + `", "reason": "r"}`) }
	if scope := b.ApplyMessage("auto.bot.b1", cmd(ActionHalt), 1); scope != "bot.b1" || b.Get("bot.b1").State != Halted {
		t.Fatalf("auto halt: scope %q, %+v", scope, b.Get("bot.b1"))
	}
	for i, action := range []string{ActionResume, ActionPause, "bogus"} {
		b.ApplyMessage("auto.bot.b1", cmd(action), uint64(2+i))
		if st := b.Get("bot.b1"); st.State != Halted {
			t.Fatalf("%s on the auto subject: %+v", action, st)
		}
	}
	b.ApplyMessage("auto.global", cmd(ActionResume), 9)
	if st := b.Get("global"); st.State != Halted || !strings.Contains(st.Reason, "applied as a halt") {
		t.Fatalf("a resume on auto.global: %+v", st)
	}
	// An operator's resume of the scope lifts the automatic halt.
	b.ApplyMessage("bot.b1", cmd(ActionResume), 10)
	if st := b.Get("bot.b1"); st.State != Active {
		t.Fatalf("operator resume: %+v", st)
	}
	if scope := b.ApplyMessage("auto.nonsense", cmd(ActionHalt), 11); scope != ScopeGlobal {
		t.Fatalf("auto subject without a scope applied to %q, want a global halt", scope)
	}
}
