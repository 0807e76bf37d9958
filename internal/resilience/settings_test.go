package resilience

import (
	"testing"
	"time"
)

func TestReversedRetryWaitsFromFlagsAreRejected(t *testing.T) {
	s, err := Profile(Development)
	if err != nil {
		t.Fatal(err)
	}
	reversed := s.Override(Settings{Retry: RetrySettings{MinWait: 5 * time.Minute, MaxWait: time.Second}})
	if err := reversed.Validate(); err == nil {
		t.Errorf("min wait 5m with max wait 1s accepted: %+v", reversed.Retry)
	}
	longer := s.Override(Settings{Retry: RetrySettings{MinWait: 2 * time.Minute}})
	if err := longer.Validate(); err != nil || longer.Retry.MaxWait != 2*time.Minute {
		t.Errorf("a longer min wait alone: %+v, %v", longer.Retry, err)
	}
}
