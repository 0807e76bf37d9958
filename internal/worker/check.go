package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/consumer"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natsconn"
	"github.com/flowguard/flowguard/internal/provision"
)

// ErrCheckFailed is returned by Check when the deployment does not fit this worker.
var ErrCheckFailed = errors.New("the deployment does not fit this worker: see the FAIL lines above")

// Bounds of Check.
const (
	defaultCheckTimeout = 10 * time.Second
	checkOpTimeout      = 3 * time.Second
	// checkStream is a stream name no one uses: a publish expecting it is refused
	// by the stream that would store it, so checking a right stores nothing.
	checkStream = "flowguard-check-stores-nothing"
)

// Check connects and verifies, changing nothing, what this worker needs of its
// deployment: JetStream, the streams and buckets and their settings, the shared
// consumer's settings, and the NATS rights of its user. It prints one line per item
// to out, with what to do about each problem, and returns ErrCheckFailed when one
// is found. It waits for the server for at most the connect timeout (10s when none
// is set).
func (w *Worker) Check(ctx context.Context, out io.Writer) error {
	if w.cfg.NATS.URL == "" {
		return errors.New("--check checks a deployment: give its server with --nats-url")
	}
	timeout := w.cfg.ConnectTimeout
	if timeout == 0 {
		timeout = defaultCheckTimeout
	}
	violations := make(chan error, 16)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := natsconn.Wait(cctx, w.cfg.NATS, "flowguard-worker-check "+w.cfg.WorkerID, zerolog.Nop(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case violations <- err:
				default:
				}
			}
		}))
	if err != nil {
		printFinding(out, provision.Finding{What: "connect to " + w.cfg.NATS.URL, Problem: err.Error(),
			Fix: "start the server, check --nats-url and the credentials, or raise --connect-timeout"})
		return ErrCheckFailed
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	findings := []provision.Finding{{What: "connect to " + nc.ConnectedUrlRedacted(),
		Fix: fmt.Sprintf("server %s; this worker speaks contract version %s", nc.ConnectedServerVersion(), contract.Version)}}
	jsCheck := provision.Finding{What: "JetStream"}
	if _, err := js.AccountInfo(ctx); err != nil {
		jsCheck.Problem = err.Error()
		jsCheck.Fix = "enable JetStream on the server and for this user's account; in a cluster, a majority of the servers must be up"
		findings = append(findings, jsCheck)
		return report(out, findings)
	}
	findings = append(findings, jsCheck)
	inspected, err := provision.Inspect(ctx, js, w.cfg.Provision)
	if err != nil {
		return err
	}
	findings = append(findings, inspected...)
	findings = append(findings, w.checkConsumer(ctx, js, w.cfg.Consumer))
	firings := w.cfg.Consumer
	firings.Stream, firings.Durable, firings.FilterSubject = contract.StreamSchedules, contract.DurableSchedules, w.subjects.FiredAll()
	findings = append(findings, w.checkConsumer(ctx, js, firings))
	findings = append(findings, w.checkRights(ctx, js, violations)...)
	return report(out, findings)
}

// checkConsumer compares a consumer the workers share (of requests, or of
// schedules' firings), as the server stores it, with this worker's settings.
func (w *Worker) checkConsumer(ctx context.Context, js jetstream.JetStream, c consumer.Config) provision.Finding {
	f := provision.Finding{What: "consumer " + c.Durable + " on " + c.Stream}
	cons, err := js.Consumer(ctx, c.Stream, c.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		f.Fix = "missing: a worker creates it when it starts"
	case err != nil:
		f.Problem, f.Fix = "cannot read it: "+err.Error(), "check the user's permissions ($JS.API.CONSUMER.INFO."+c.Stream+"."+c.Durable+")"
	default:
		if diffs := c.Conflicts(cons.CachedInfo().Config); len(diffs) > 0 {
			f.Problem = strings.Join(diffs, "; ")
			f.Fix = fmt.Sprintf("start this worker with the settings of the others, or change them for all (nats consumer edit %s %s, or delete the consumer while no worker runs)", c.Stream, c.Durable)
		}
	}
	return f
}

// checkRights tries what the worker does with its user's rights, storing nothing:
// reads of every bucket, and publishes that the stream refuses because they expect
// another stream.
func (w *Worker) checkRights(ctx context.Context, js jetstream.JetStream, violations <-chan error) []provision.Finding {
	s := w.subjects
	var out []provision.Finding
	for _, bucket := range []string{contract.BucketState, contract.BucketWorkflows, contract.BucketRisk, contract.BucketBreakers, contract.BucketRateLimits} {
		out = append(out, tryRight(ctx, "read bucket "+bucket, violations, func(ctx context.Context) error {
			kv, err := js.KeyValue(ctx, bucket)
			if err != nil {
				return err
			}
			_, err = kv.Get(ctx, "flowguard-check")
			return err
		}))
	}
	for _, subject := range []string{
		s.Event(contract.NoBot, "check", "check", contract.ExecutionStarted),
		s.Orders("check"), s.DLQ("check"), s.AutoHalt("global"),
		"$KV." + contract.BucketState + ".check", "$KV." + contract.BucketRisk + ".metrics.check",
		"$KV." + contract.BucketRisk + ".reservations.check", "$KV." + contract.BucketBreakers + ".state.check",
		s.RateLimit("check", "check", time.Second, 0), "$KV." + contract.BucketRateLimits + ".pause.check",
	} {
		out = append(out, tryRight(ctx, "publish to "+subject, violations, func(ctx context.Context) error {
			_, err := js.Publish(ctx, subject, nil, jetstream.WithExpectStream(checkStream))
			return err
		}))
	}
	return out
}

// tryRight runs op and reports a permission violation the server sends meanwhile.
// Other outcomes (not found, a refused expectation, a missing stream) mean that the
// right was granted.
func tryRight(ctx context.Context, what string, violations <-chan error, op func(context.Context) error) provision.Finding {
	for len(violations) > 0 { // left over from an earlier check
		<-violations
	}
	f := provision.Finding{What: what}
	ctx, cancel := context.WithTimeout(ctx, checkOpTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	select {
	case v := <-violations:
		cancel()
		<-done
		f.Problem, f.Fix = v.Error(), "give this user the rights of the worker role (docs/clusters.md, Roles)"
	case err := <-done:
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			f.Problem, f.Fix = "no answer within "+checkOpTimeout.String(), "check that JetStream answers and that this user may use its API"
		}
	}
	return f
}

// report prints the findings and says whether any is a problem.
func report(out io.Writer, findings []provision.Finding) error {
	failed := false
	for _, f := range findings {
		printFinding(out, f)
		failed = failed || f.Problem != ""
	}
	if failed {
		return ErrCheckFailed
	}
	fmt.Fprintln(out, "all checks passed")
	return nil
}

func printFinding(out io.Writer, f provision.Finding) {
	switch {
	case f.Problem != "":
		fmt.Fprintf(out, "FAIL  %s: %s\n      fix: %s\n", f.What, f.Problem, f.Fix)
	case f.Fix != "":
		fmt.Fprintf(out, "ok    %s (%s)\n", f.What, f.Fix)
	default:
		fmt.Fprintf(out, "ok    %s\n", f.What)
	}
}
