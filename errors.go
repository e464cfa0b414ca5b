package flypg

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flypg/flypg/forward"
)

// Errors of the forwarding layer, for errors.Is. Each comes wrapped in a
// *forward.Error that names the executor and the request; the README's
// "Guarantees and failure modes" says what to do about each.
var (
	// ErrUnavailable: the executor could not be reached; nothing was sent.
	ErrUnavailable = forward.ErrUnavailable
	// ErrInDoubt: the request was sent but its outcome is unknown; the
	// write may have committed. Never retry it blindly.
	ErrInDoubt = forward.ErrInDoubt
	// ErrBusy: the executor could not start the unit before its deadline
	// (all its unit slots stayed taken); nothing ran.
	ErrBusy = forward.ErrBusy
	// ErrDatabaseMismatch: the executor serves another database than the
	// local replica replicates; nothing ran. The error names both.
	ErrDatabaseMismatch = forward.ErrDatabaseMismatch
	// ErrTxAborted: a forwarded transaction broke before COMMIT and was
	// rolled back.
	ErrTxAborted = forward.ErrTxAborted
	// ErrNotPrimary: the node reached does not forward SQL.
	ErrNotPrimary = forward.ErrNotPrimary
	// ErrUnauthenticated: the executor refused the secret.
	ErrUnauthenticated = forward.ErrUnauthenticated
)

// SafeToRetry reports whether err certainly left nothing committed, so
// that running the same write (or the whole transaction) again cannot
// apply it twice: the executor was unreachable or busy, a forwarded
// transaction was rolled back, or PostgreSQL refused the statement with an
// error pgconn considers safe to retry. It is false for nil, for in-doubt
// outcomes and for replication timeouts (the write committed).
func SafeToRetry(err error) bool {
	if err == nil {
		return false
	}
	var fe *forward.Error
	if errors.As(err, &fe) {
		return fe.SafeToRetry()
	}
	return pgconn.SafeToRetry(err)
}

// NewCallError returns the error a registered function returns to fail
// with a code the caller can act on: Call then returns a *CallError with
// that Code and message (and the function's transaction rolls back).
func NewCallError(code, message string) error {
	return &forward.CallError{Code: code, Message: message}
}
