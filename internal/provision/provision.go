// Package provision creates the streams and KV buckets of the contract, or checks
// that existing ones fit. It is idempotent: a second worker or a restart reuses what
// exists; a stream or bucket whose configuration conflicts is reported, never changed.
package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
)

// Defaults of Config.
const (
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultEventsMaxAge    = 7 * 24 * time.Hour
	DefaultStateTTL        = 7 * 24 * time.Hour
	DefaultOrdersMaxAge    = 30 * 24 * time.Hour
	DefaultDLQMaxAge       = 30 * 24 * time.Hour
	riskHistory            = 16
	breakersHistory        = 16
)

// WorkflowHistory is how many versions of each workflow flow_workflows keeps.
const WorkflowHistory = 16

// ErrConflict is matched by the error returned when a stream or bucket exists with a
// configuration flowguard cannot use.
var ErrConflict = errors.New("existing configuration conflicts")

// Config sizes the streams and buckets.
type Config struct {
	Subjects contract.Subjects
	// Replicas of every stream and bucket: 1 on a single server, 3 in a cluster.
	Replicas int
	// DuplicateWindow deduplicates requests by request id, and events, orders and
	// dead letters by their message ids.
	DuplicateWindow time.Duration
	// EventsMaxAge is how long lifecycle events are kept.
	EventsMaxAge time.Duration
	// StateTTL is how long execution state (status, result, checkpoints) is kept.
	StateTTL time.Duration
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if c.Subjects.Prefix == "" {
		c.Subjects.Prefix = contract.DefaultPrefix
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("replicas must be between 1 and 5, got %d", c.Replicas)
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = DefaultEventsMaxAge
	}
	if c.StateTTL == 0 {
		c.StateTTL = DefaultStateTTL
	}
	if c.DuplicateWindow < time.Second || c.EventsMaxAge < c.DuplicateWindow || c.StateTTL < c.DuplicateWindow {
		return fmt.Errorf("duplicate window (%s) must be at least 1s and no longer than the events max age (%s) and the state TTL (%s)",
			c.DuplicateWindow, c.EventsMaxAge, c.StateTTL)
	}
	return nil
}

// Buckets are the KV buckets of the contract.
type Buckets struct {
	State     jetstream.KeyValue
	Workflows jetstream.KeyValue
	Risk      jetstream.KeyValue
	// Breakers holds operators' orders about providers' circuit breakers and, in
	// cluster scope, the breaker states the workers share.
	Breakers jetstream.KeyValue
}

// Streams returns the stream configurations of the contract.
func Streams(c Config) []jetstream.StreamConfig {
	s := c.Subjects
	return []jetstream.StreamConfig{
		{
			Name: contract.StreamExec, Description: "flowguard execution requests (work queue)",
			Subjects: []string{s.ExecAll()}, Retention: jetstream.WorkQueuePolicy,
			Duplicates: c.DuplicateWindow,
		},
		{
			Name: contract.StreamEvents, Description: "flowguard lifecycle events",
			Subjects: []string{s.EventsAll()}, Retention: jetstream.LimitsPolicy,
			MaxAge: c.EventsMaxAge, Duplicates: c.DuplicateWindow,
		},
		{
			Name: contract.StreamEmergency, Description: "flowguard emergency commands: the last per subject is the scope's state",
			Subjects: []string{s.EmergencyAll()}, Retention: jetstream.LimitsPolicy,
			Duplicates: c.DuplicateWindow,
		},
		{
			Name: contract.StreamOrders, Description: "flowguard order intents",
			Subjects: []string{s.OrdersAll()}, Retention: jetstream.LimitsPolicy,
			MaxAge: DefaultOrdersMaxAge, Duplicates: c.DuplicateWindow,
		},
		{
			Name: contract.StreamDLQ, Description: "flowguard dead letters: requests that can never run",
			Subjects: []string{s.DLQAll()}, Retention: jetstream.LimitsPolicy,
			MaxAge: DefaultDLQMaxAge, Duplicates: c.DuplicateWindow,
		},
	}
}

// Ensure creates or checks every stream and bucket.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) (*Buckets, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	for _, sc := range Streams(c) {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = c.Replicas
		if err := ensureStream(ctx, js, sc); err != nil {
			return nil, err
		}
	}
	var b Buckets
	var err error
	if b.State, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: contract.BucketState, Description: "flowguard execution state",
		TTL: c.StateTTL, History: 1, Replicas: c.Replicas, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, err
	}
	if b.Workflows, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: contract.BucketWorkflows, Description: "flowguard workflow definitions; the revision is the version",
		History: WorkflowHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, err
	}
	if b.Risk, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: contract.BucketRisk, Description: "flowguard risk limits and metrics",
		History: riskHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, err
	}
	if b.Breakers, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: contract.BucketBreakers, Description: "flowguard circuit breakers: operators' orders and shared states, by provider",
		History: breakersHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, err
	}
	return &b, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	_, err := js.CreateStream(ctx, want)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w%s", want.Name, err, placementHint(err, want.Replicas))
	}
	s, err := js.Stream(ctx, want.Name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	var diffs []string
	diff := func(field string, have, want any) {
		if fmt.Sprint(have) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("%s is %v, flowguard wants %v", field, have, want))
		}
	}
	diff("subjects", sorted(have.Subjects), sorted(want.Subjects))
	diff("retention", have.Retention, want.Retention)
	diff("storage", have.Storage, want.Storage)
	diff("replicas", have.Replicas, want.Replicas)
	diff("max age", have.MaxAge, want.MaxAge)
	diff("duplicate window", have.Duplicates, want.Duplicates)
	if len(diffs) == 0 {
		return nil // differs only in settings flowguard does not depend on
	}
	return fmt.Errorf("%w: stream %s: %s; flowguard does not change an existing stream: "+
		"start the worker with settings that match it, or edit the stream (nats stream edit %s) "+
		"or remove it (nats stream rm %s) if it holds nothing you need",
		ErrConflict, want.Name, strings.Join(diffs, "; "), want.Name, want.Name)
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, want)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("create bucket %s: %w%s", want.Bucket, err, placementHint(err, want.Replicas))
	}
	kv, err = js.KeyValue(ctx, want.Bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", want.Bucket, err)
	}
	have := st.(*jetstream.KeyValueBucketStatus).Config()
	var diffs []string
	if have.TTL != want.TTL {
		diffs = append(diffs, fmt.Sprintf("TTL is %s, flowguard wants %s", have.TTL, want.TTL))
	}
	if have.History != want.History {
		diffs = append(diffs, fmt.Sprintf("history is %d, flowguard wants %d", have.History, want.History))
	}
	if have.Replicas != want.Replicas {
		diffs = append(diffs, fmt.Sprintf("replicas is %d, flowguard wants %d", have.Replicas, want.Replicas))
	}
	if len(diffs) == 0 {
		return kv, nil
	}
	return nil, fmt.Errorf("%w: bucket %s: %s; flowguard does not change an existing bucket: "+
		"start the worker with settings that match it, or edit the bucket (nats kv edit %s)",
		ErrConflict, want.Bucket, strings.Join(diffs, "; "), want.Bucket)
}

// placementHint explains the usual cause of a failed create in a cluster.
func placementHint(err error, replicas int) string {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return ""
	}
	switch apiErr.ErrorCode {
	case errCodeNoSuitablePeers, errCodeInsufficientResources, errCodeReplicasNotSupported:
		return fmt.Sprintf(" (the servers cannot place %d replicas: run a cluster of at least %d JetStream servers, or lower --replicas)", replicas, replicas)
	}
	return ""
}

// JetStream API error codes of a failed placement (nats-server's jetstream_errors).
const (
	errCodeNoSuitablePeers       jetstream.ErrorCode = 10005
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeReplicasNotSupported  jetstream.ErrorCode = 10074
)

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
