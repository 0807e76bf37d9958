package nodes

import "errors"

// Error kinds of node failures.
const (
	KindExpression = "expression"
	KindNode       = "node_error"
)

// Error is a node failure with a kind. It unwraps to the cause.
type Error struct {
	Kind string
	// Transient marks failures worth retrying (connection errors, 5xx, no responders).
	Transient bool
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent wraps err as a failure that retrying cannot fix.
func Permanent(kind string, err error) error { return &Error{Kind: kind, Err: err} }

// Transient wraps err as a failure that a later attempt may not meet.
func Transient(kind string, err error) error { return &Error{Kind: kind, Transient: true, Err: err} }

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
