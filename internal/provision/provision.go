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

	"github.com/nats-io/nats.go"
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
	rateLimitsHistory      = 16
	// rateCountersMaxAge keeps a budget's window counter past the longest window.
	rateCountersMaxAge = 25 * time.Hour
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
	// RateLimits holds providers' budgets that operators edit live and the pauses
	// providers asked for.
	RateLimits jetstream.KeyValue
}

// Streams returns the stream configurations of the contract, the emergency stream
// first: created before the others, it can only be missing while they exist when
// someone deleted it.
func Streams(c Config) []jetstream.StreamConfig {
	s := c.Subjects
	return []jetstream.StreamConfig{
		emergencyStream(c),
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
			Name: contract.StreamOrders, Description: "flowguard order intents",
			Subjects: []string{s.OrdersAll()}, Retention: jetstream.LimitsPolicy,
			MaxAge: DefaultOrdersMaxAge, Duplicates: c.DuplicateWindow,
		},
		{
			Name: contract.StreamDLQ, Description: "flowguard dead letters: requests that can never run",
			Subjects: []string{s.DLQAll()}, Retention: jetstream.LimitsPolicy,
			MaxAge: DefaultDLQMaxAge, Duplicates: c.DuplicateWindow,
		},
		{
			Name: contract.StreamSchedules, Description: "flowguard schedules (JetStream fires them) and their firings (a work queue)",
			Subjects: []string{s.SchedulesAll(), s.FiredAll()}, Retention: jetstream.WorkQueuePolicy,
			Duplicates: c.DuplicateWindow, AllowMsgSchedules: true, AllowRollup: true,
		},
		{
			Name: contract.StreamRateLimits, Description: "flowguard rate limits: one counter per provider, budget and window",
			Subjects: []string{s.RateLimitAll()}, Retention: jetstream.LimitsPolicy,
			MaxAge: rateCountersMaxAge, MaxMsgsPerSubject: 1, Duplicates: time.Second, AllowMsgCounter: true,
		},
	}
}

// emergencyStream keeps every command: the audit trail, from which every worker
// computes the state. Messages can be neither deleted nor purged, since that would
// lift halts without a resume.
func emergencyStream(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: contract.StreamEmergency, Description: "flowguard emergency commands: the last per subject is the scope's state",
		Subjects: []string{c.Subjects.EmergencyAll()}, Retention: jetstream.LimitsPolicy,
		Duplicates: c.DuplicateWindow, DenyDelete: true, DenyPurge: true,
		Storage: jetstream.FileStorage, Replicas: c.Replicas,
	}
}

// ErrEmergencyMissing is returned when the emergency stream is missing while the
// other streams exist: it was deleted, and every halt it held with it.
var ErrEmergencyMissing = errors.New("stream " + contract.StreamEmergency + " is missing while the other flowguard streams exist: " +
	"it was deleted, and with it every standing halt; recreate it deliberately with `publisher emergency init --reason ...`, " +
	"which stores a global halt, then resume when you have checked what should run")

// Ensure creates or checks every stream and bucket. It does not recreate a deleted
// emergency stream (ErrEmergencyMissing): see CreateEmergency.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) (*Buckets, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	_, err := js.Stream(ctx, contract.StreamEmergency)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, execErr := js.Stream(ctx, contract.StreamExec); execErr == nil {
			return nil, ErrEmergencyMissing
		}
	}
	for _, sc := range Streams(c) {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = c.Replicas
		if err := ensureStream(ctx, js, sc); err != nil {
			return nil, err
		}
	}
	var b Buckets
	kvs := []*jetstream.KeyValue{&b.State, &b.Workflows, &b.Risk, &b.Breakers, &b.RateLimits}
	for i, bc := range BucketConfigs(c) {
		if *kvs[i], err = ensureBucket(ctx, js, bc); err != nil {
			return nil, err
		}
	}
	return &b, nil
}

// BucketConfigs returns the bucket configurations of the contract: state,
// workflows, risk, breakers and rate limits, in that order.
func BucketConfigs(c Config) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{
			Bucket: contract.BucketState, Description: "flowguard execution state",
			TTL: c.StateTTL, History: 1, Replicas: c.Replicas, Storage: jetstream.FileStorage,
		},
		{
			Bucket: contract.BucketWorkflows, Description: "flowguard workflow definitions; the revision is the version",
			History: WorkflowHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
		},
		{
			Bucket: contract.BucketRisk, Description: "flowguard risk limits and metrics",
			History: riskHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
		},
		{
			Bucket: contract.BucketBreakers, Description: "flowguard circuit breakers: operators' orders and shared states, by provider",
			History: breakersHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
		},
		{
			Bucket: contract.BucketRateLimits, Description: "flowguard rate limits: providers' budgets and pauses",
			History: rateLimitsHistory, Replicas: c.Replicas, Storage: jetstream.FileStorage,
		},
	}
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	_, err := js.CreateStream(ctx, want)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w%s", want.Name, err, hint(err, want.Replicas))
	}
	s, err := js.Stream(ctx, want.Name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", want.Name, err)
	}
	diffs := streamDiffs(s.CachedInfo().Config, want)
	if len(diffs) == 0 {
		return nil // differs only in settings flowguard does not depend on
	}
	return fmt.Errorf("%w: stream %s: %s; flowguard does not change an existing stream: %s",
		ErrConflict, want.Name, strings.Join(diffs, "; "), streamFix(want.Name))
}

func streamFix(name string) string {
	return fmt.Sprintf("start the worker with settings that match it, or edit the stream (nats stream edit %s) "+
		"or remove it (nats stream rm %s) if it holds nothing you need", name, name)
}

// streamDiffs lists the settings flowguard depends on where have differs from want.
func streamDiffs(have, want jetstream.StreamConfig) []string {
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
	if want.DenyDelete || want.DenyPurge {
		// The emergency stream: a lost command would lift a halt without a resume.
		diff("deny delete", have.DenyDelete, want.DenyDelete)
		diff("deny purge", have.DenyPurge, want.DenyPurge)
		unlimited := func(field string, v int64) {
			if v > 0 {
				diffs = append(diffs, fmt.Sprintf("%s is %d, flowguard wants no limit (old commands would be dropped)", field, v))
			}
		}
		unlimited("max messages", have.MaxMsgs)
		unlimited("max bytes", have.MaxBytes)
		unlimited("max messages per subject", have.MaxMsgsPerSubject)
	}
	return diffs
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, want)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("create bucket %s: %w%s", want.Bucket, err, hint(err, want.Replicas))
	}
	kv, err = js.KeyValue(ctx, want.Bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", want.Bucket, err)
	}
	diffs := bucketDiffs(st.(*jetstream.KeyValueBucketStatus).Config(), want)
	if len(diffs) == 0 {
		return kv, nil
	}
	return nil, fmt.Errorf("%w: bucket %s: %s; flowguard does not change an existing bucket: %s",
		ErrConflict, want.Bucket, strings.Join(diffs, "; "), bucketFix(want.Bucket))
}

func bucketFix(name string) string {
	return fmt.Sprintf("start the worker with settings that match it, or edit the bucket (nats kv edit %s)", name)
}

// bucketDiffs lists the settings flowguard depends on where have differs from want.
func bucketDiffs(have, want jetstream.KeyValueConfig) []string {
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
	return diffs
}

// Finding is the outcome of checking one stream, bucket or right.
type Finding struct {
	// What was checked, e.g. "stream FLOW_EXEC".
	What string
	// Problem is empty when all is well; else what is wrong.
	Problem string
	// Fix says what to do about the problem; with no problem, a note.
	Fix string
}

// Inspect checks, without changing anything, that every stream and bucket
// either is missing (a worker creates it) or has the settings this version needs.
func Inspect(ctx context.Context, js jetstream.JetStream, c Config) ([]Finding, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var out []Finding
	_, execErr := js.Stream(ctx, contract.StreamExec)
	for _, want := range Streams(c) {
		want.Storage, want.Replicas = jetstream.FileStorage, c.Replicas
		f := Finding{What: "stream " + want.Name}
		s, err := js.Stream(ctx, want.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound) && want.Name == contract.StreamEmergency && execErr == nil:
			f.Problem, f.Fix = ErrEmergencyMissing.Error(), "publisher emergency init --reason ..."
		case errors.Is(err, jetstream.ErrStreamNotFound):
			f.Fix = "missing: a worker creates it when it starts"
		case err != nil:
			f.Problem, f.Fix = "cannot read it: "+err.Error(), "check the user's permissions ($JS.API.STREAM.INFO."+want.Name+") and that JetStream is enabled for the account"
		default:
			if diffs := streamDiffs(s.CachedInfo().Config, want); len(diffs) > 0 {
				f.Problem, f.Fix = strings.Join(diffs, "; "), streamFix(want.Name)
			}
		}
		out = append(out, f)
	}
	for _, want := range BucketConfigs(c) {
		f := Finding{What: "bucket " + want.Bucket}
		kv, err := js.KeyValue(ctx, want.Bucket)
		var st jetstream.KeyValueStatus
		if err == nil {
			st, err = kv.Status(ctx)
		}
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			f.Fix = "missing: a worker creates it when it starts"
		case err != nil:
			f.Problem, f.Fix = "cannot read it: "+err.Error(), "check the user's permissions ($JS.API.STREAM.INFO.KV_"+want.Bucket+")"
		default:
			if diffs := bucketDiffs(st.(*jetstream.KeyValueBucketStatus).Config(), want); len(diffs) > 0 {
				f.Problem, f.Fix = strings.Join(diffs, "; "), bucketFix(want.Bucket)
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// hint explains the usual causes of a failed create in a cluster.
func hint(err error, replicas int) string {
	if Unavailable(err) {
		return " (JetStream did not answer: in a cluster, a majority of the servers must be up and have elected a leader; check that they run and see each other)"
	}
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

// Unavailable reports whether err means that JetStream did not answer or is not
// ready yet, as while a cluster forms or elects a leader: worth trying again.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == errCodeClusterNotAvailable
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}

// JetStream API error codes (nats-server's jetstream_errors).
const (
	errCodeNoSuitablePeers       jetstream.ErrorCode = 10005
	errCodeClusterNotAvailable   jetstream.ErrorCode = 10008
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeReplicasNotSupported  jetstream.ErrorCode = 10074
)

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// CreateEmergency creates the emergency stream when it is missing, marked as
// recreated (contract.MetadataRecreated): until a global resume is stored, every
// worker counts it as a global halt, so no worker that starts before the caller's
// halt is stored runs anything. It fails when it exists. The caller then stores
// the state it wants (a global halt).
func CreateEmergency(ctx context.Context, js jetstream.JetStream, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if _, err := js.Stream(ctx, contract.StreamEmergency); err == nil {
		return fmt.Errorf("stream %s exists; nothing to initialise", contract.StreamEmergency)
	}
	sc := emergencyStream(c)
	sc.Metadata = map[string]string{contract.MetadataRecreated: time.Now().UTC().Format(time.RFC3339)}
	if _, err := js.CreateStream(ctx, sc); err != nil {
		return fmt.Errorf("create stream %s: %w%s", contract.StreamEmergency, err, hint(err, c.Replicas))
	}
	return nil
}
