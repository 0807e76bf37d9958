package nodes

import (
	"errors"
	"time"
)

// Error kinds of node failures. The executor adds timeout and circuit_open.
const (
	// KindExpression: an expression or a ${...} placeholder could not be evaluated.
	KindExpression = "expression"
	// KindNode: a failure of no particular kind.
	KindNode = "node_error"
	// KindSecret: a ${env:NAME} placeholder names a variable the worker does not
	// share, or an http call would send a secret to a host it is not bound to.
	KindSecret = "secret"
	// KindEgress: an http call was refused by the worker's egress policy: its host
	// is not on --egress-allow, it resolved to an internal address, or it
	// redirected to another host.
	KindEgress = "egress_refused"
	// KindInvalidCall: the rendered URL, subject or body cannot be sent.
	KindInvalidCall = "invalid_call"
	// KindConnection: the provider could not be reached, or the connection broke (transient).
	KindConnection = "connection"
	// KindHTTPStatus: the provider answered with a non-2xx status; 5xx and 408 are
	// transient, other 4xx are not.
	KindHTTPStatus = "http_status"
	// KindRateLimited: HTTP 429 or 418 (transient; its Retry-After is honoured), or
	// no rate-limit budget before the node's deadline (see internal/ratelimit).
	KindRateLimited = "rate_limited"
	// KindBadResponse: the answer is too large, or not the JSON it claims to be.
	KindBadResponse = "bad_response"
	// KindNoResponders: no NATS service listens on the subject (transient).
	KindNoResponders = "no_responders"
	// KindServiceError: a NATS service answered with an error header; codes of 500
	// and more are transient.
	KindServiceError = "service_error"
)

// Error is a node failure with a kind. It unwraps to the cause.
type Error struct {
	Kind string
	// Transient marks failures worth retrying (connection errors, 5xx, no responders).
	Transient bool
	// Wait is how long the provider asked to wait before a retry (HTTP Retry-After).
	Wait time.Duration
	// Unrepeatable marks a failure after which the provider may have acted on the
	// call (a POST that timed out or met a 5xx): it is not retried.
	Unrepeatable bool
	Err          error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent wraps err as a failure that retrying cannot fix.
func Permanent(kind string, err error) error { return &Error{Kind: kind, Err: err} }

// Transient wraps err as a failure that a later attempt may not meet.
func Transient(kind string, err error) error { return &Error{Kind: kind, Transient: true, Err: err} }

// ErrStopped is matched by the error of a node whose execution must stop without
// a terminal state: its worker no longer owns it. Such a node neither fails nor is
// retried, and no circuit breaker counts it.
var ErrStopped = errors.New("the execution was stopped")

// Stopped wraps err so that it also matches ErrStopped.
func Stopped(err error) error { return &stopped{err: err} }

type stopped struct{ err error }

func (s *stopped) Error() string   { return s.err.Error() }
func (s *stopped) Unwrap() []error { return []error{s.err, ErrStopped} }

// KindOf returns the kind of a node failure, KindNode when it has none.
func KindOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Kind != "" {
		return e.Kind
	}
	return KindNode
}

// IsTransient reports whether err is marked transient.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// IsUnrepeatable reports whether err is marked unrepeatable.
func IsUnrepeatable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Unrepeatable
}

// RetryAfterOf returns the wait a failure asks for before a retry, 0 when none.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.Wait
	}
	return 0
}
