package provision

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
)

func TestEnsureIsIdempotent(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t).URL())
	ctx := context.Background()
	for i := range 2 {
		b, err := Ensure(ctx, js, Config{})
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if _, err := b.State.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Breakers.Put(ctx, contract.BreakerOverrideKey("binance"), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{contract.BucketState, contract.BucketWorkflows, contract.BucketRisk, contract.BucketBreakers} {
		if _, err := js.KeyValue(ctx, name); err != nil {
			t.Errorf("bucket %s: %v", name, err)
		}
	}
	for _, name := range []string{contract.StreamExec, contract.StreamEvents, contract.StreamEmergency, contract.StreamOrders, contract.StreamDLQ} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
}

func TestEnsureReportsConflictsWithoutChangingThem(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t).URL())
	ctx := context.Background()
	// Someone created FLOW_EXEC with limits retention and another dedupe window.
	if err := CreateEmergency(ctx, js, Config{}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: contract.StreamExec, Subjects: []string{"flow.exec.>"}, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(ctx, js, Config{})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	for _, want := range []string{"FLOW_EXEC", "retention is Limits, flowguard wants WorkQueue", "duplicate window is 1m0s, flowguard wants 10m0s", "nats stream edit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	s, err := js.Stream(ctx, contract.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.Retention != jetstream.LimitsPolicy || cfg.Duplicates != time.Minute {
		t.Errorf("the existing stream was changed: %+v", cfg)
	}
}

func TestEnsureReportsBucketConflicts(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t).URL())
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: contract.BucketState, History: 5}); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(ctx, js, Config{})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "history is 5, flowguard wants 1") {
		t.Fatalf("err = %v", err)
	}
}

func TestEnsureExplainsReplicasAServerCannotPlace(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t).URL())
	_, err := Ensure(context.Background(), js, Config{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "cannot place 3 replicas") {
		t.Fatalf("err = %v", err)
	}
}

func TestADeletedEmergencyStreamIsNotRecreatedSilently(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t).URL())
	ctx := context.Background()
	if _, err := Ensure(ctx, js, Config{}); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, contract.StreamEmergency); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(ctx, js, Config{}); !errors.Is(err, ErrEmergencyMissing) || !strings.Contains(err.Error(), "emergency init") {
		t.Fatalf("err = %v, want ErrEmergencyMissing", err)
	}
	if err := CreateEmergency(ctx, js, Config{}); err != nil {
		t.Fatal(err)
	}
	if err := CreateEmergency(ctx, js, Config{}); err == nil {
		t.Error("CreateEmergency over an existing stream succeeded")
	}
	if _, err := Ensure(ctx, js, Config{}); err != nil {
		t.Fatalf("after init: %v", err)
	}
	s, err := js.Stream(ctx, contract.StreamEmergency)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; !cfg.DenyPurge || !cfg.DenyDelete {
		t.Errorf("the emergency stream can be purged or its messages deleted: %+v", cfg)
	}
}

// An emergency stream that lets commands be deleted, purged or dropped by a limit
// could lift halts without a resume: a worker does not start on it.
func TestEnsureVerifiesTheEmergencyStreamsProtections(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*jetstream.StreamConfig)
		want   string
	}{
		{"deletable", func(c *jetstream.StreamConfig) { c.DenyDelete = false }, "deny delete is false"},
		{"purgeable", func(c *jetstream.StreamConfig) { c.DenyPurge = false }, "deny purge is false"},
		{"max messages", func(c *jetstream.StreamConfig) { c.MaxMsgs = 100 }, "max messages is 100"},
		{"max bytes", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 20 }, "max bytes is 1048576"},
		{"max per subject", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }, "max messages per subject is 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js := natstest.JetStream(t, natstest.Start(t).URL())
			ctx := context.Background()
			c := Config{}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			sc := Streams(c)[0]
			sc.Replicas = c.Replicas
			tc.mutate(&sc)
			if _, err := js.CreateStream(ctx, sc); err != nil {
				t.Fatal(err)
			}
			_, err := Ensure(ctx, js, Config{})
			if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a conflict naming %q", err, tc.want)
			}
		})
	}
}
