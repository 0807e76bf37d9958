package console

import (
	"slices"
	"testing"
)

func TestHubCoalescesChangesPerSubscriber(t *testing.T) {
	h := newHub()
	list := h.subscribe([]string{topicExecutions})
	both := h.subscribe([]string{topicExecutions, topicEmergency})
	for range 1000 {
		h.touch(topicExecutions)
	}
	h.touch(topicFleet) // nobody asked for it
	h.flush()
	h.touch(topicEmergency)
	h.flush() // both has not read yet: the changes add up

	for _, tc := range []struct {
		name string
		sub  *subscriber
		want []string
	}{
		{"list", list, []string{topicExecutions}},
		{"both", both, []string{topicEmergency, topicExecutions}},
	} {
		select {
		case <-tc.sub.notify:
		default:
			t.Fatalf("%s: not notified", tc.name)
		}
		got := h.changes(tc.sub)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: changes %v, want %v", tc.name, got, tc.want)
		}
	}
	h.flush()
	select {
	case <-list.notify:
		t.Error("notified with nothing changed")
	default:
	}
}
