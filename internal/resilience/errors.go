package resilience

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrCircuitOpen is matched by the error of a call refused, without being made,
	// because its provider's circuit breaker is open.
	ErrCircuitOpen = errors.New("circuit breaker open")
	// ErrAttemptTimeout is matched by the error of an attempt stopped by its timeout.
	ErrAttemptTimeout = errors.New("attempt timed out")
)

// CircuitOpenError is a call refused by an open breaker. It matches ErrCircuitOpen.
type CircuitOpenError struct {
	Provider string
	// Why says who or what opened it (failures on this worker, another worker of
	// the cluster, an operator) and when calls resume.
	Why string
}

func (e *CircuitOpenError) Error() string {
	return fmt.Sprintf("circuit breaker of provider %s is open: %s; the call was not made", e.Provider, e.Why)
}

// Is reports whether target is ErrCircuitOpen.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// TimeoutError is an attempt stopped by its timeout. It matches ErrAttemptTimeout
// and unwraps to what the call returned.
type TimeoutError struct {
	Timeout time.Duration
	Err     error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after %s; raise the node's timeout if the provider is slow: %v", e.Timeout, e.Err)
}

// Is reports whether target is ErrAttemptTimeout.
func (e *TimeoutError) Is(target error) bool { return target == ErrAttemptTimeout }

func (e *TimeoutError) Unwrap() error { return e.Err }

// GaveUpError is the last failure of a call whose retries ran out: attempts
// exhausted, or the next wait would pass the caller's deadline. It unwraps to the
// last attempt's error.
type GaveUpError struct {
	Attempts int
	// Deadline is set when the next wait would have passed the caller's deadline.
	Deadline bool
	Err      error
}

func (e *GaveUpError) Error() string {
	attempts := fmt.Sprintf("%d attempts", e.Attempts)
	if e.Attempts == 1 {
		attempts = "1 attempt"
	}
	if e.Deadline {
		return fmt.Sprintf("gave up after %s, the next retry would pass the workflow deadline: %v", attempts, e.Err)
	}
	return fmt.Sprintf("failed %s: %v", attempts, e.Err)
}

func (e *GaveUpError) Unwrap() error { return e.Err }
