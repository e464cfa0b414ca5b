package flypg

import (
	"errors"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/forward"
)

// The errors a caller may meet, all reachable from this package. The
// README's "Guarantees and failure modes" says what to do about each. Two
// predicates sort them, as pgconn.SafeToRetry does for PostgreSQL's:
// SafeToRetry (nothing ran) and Committed (the write is on the primary
// although an error came back). Neither is true for an in-doubt outcome.
//
// The error types are defined by the packages that produce them; the
// aliases below are the same types, and their fields are listed here.

// Errors of the forwarding layer, for errors.Is. Each comes wrapped in a
// *ForwardError that names the executor and the request.
var (
	// ErrUnavailable: the executor could not be reached; nothing was sent.
	// Safe to retry (database/sql retries it on its own, as
	// driver.ErrBadConn).
	ErrUnavailable = forward.ErrUnavailable
	// ErrInDoubt: the request was sent but its outcome is unknown; the
	// write may have committed. Never retry it blindly; ForwardError's
	// RequestID lets forward.Client.Resolve settle it.
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
	// ErrTooLarge: a request or a result exceeded a size limit
	// (ExecutorConfig.MaxRequestBytes, MaxResponseBytes); nothing
	// committed.
	ErrTooLarge = forward.ErrTooLarge
	// ErrProtocol: client and executor speak different protocol versions,
	// or a message was malformed.
	ErrProtocol = forward.ErrProtocol
	// ErrUnknownFunction: a call named a function that is not registered
	// on the node that received it.
	ErrUnknownFunction = forward.ErrUnknownFunction
)

// ForwardError is an error of the forwarding layer:
//
//	type ForwardError struct {
//		Op        string // "exec", "query", "tx", "commit", "rollback", "call", "resolve", "ping"
//		Target    string // the executor address
//		RequestID string // hex request ID of the unit, when one was assigned
//		Kind      error  // ErrUnavailable, ErrInDoubt, ErrBusy, ... (errors.Is)
//		Err       error  // the cause
//	}
//
// Its SafeToRetry method reports whether the unit certainly did not run.
type ForwardError = forward.Error

// ReplicationError reports a write that committed on the primary but that
// the local replica had not yet replayed when the wait ended; see
// ErrReplicationTimeout. GORM's result fields (IDs, RowsAffected) are
// filled in as for a successful write, and Committed(err) is true.
//
//	type ReplicationError struct {
//		LSN lsn.LSN // the commit LSN waited for
//		Err error   // the tracker's *lsn.WaitError: errors.Is with lsn.ErrTimeout, lsn.ErrPromoted, ...
//	}
type ReplicationError = callbacks.ReplicationError

// ErrReplicationTimeout matches a ReplicationError whose wait ran out of
// time: errors.Is(db.Create(&u).Error, flypg.ErrReplicationTimeout). The
// write committed.
var ErrReplicationTimeout = callbacks.ErrReplicationTimeout

// CommittedError reports a forwarded write that committed on the primary
// although GORM reported an error after its statement, where plain GORM
// would have rolled back (see the README's routing rules for when that can
// happen). Committed(err) is true; errors.Unwrap gives GORM's error.
//
//	type CommittedError struct {
//		LSN lsn.LSN // the commit LSN
//		Err error   // GORM's error
//	}
type CommittedError = callbacks.CommittedError

// ResultLostError reports a forwarded unit that committed although its
// result could not be delivered: a retry after a lost reply found the unit
// committed, but its answer was over ExecutorConfig.MaxReplayBytes or no
// longer kept. Committed(err) is true; re-read what you need.
//
//	type ResultLostError struct {
//		Op        string  // as ForwardError.Op
//		RequestID string
//		LSN       lsn.LSN // the commit LSN
//		Reason    string  // why the result is gone
//	}
type ResultLostError = forward.CommittedError

// CallError is a registered function's failure, reported by the node that
// ran it; its transaction rolled back. errors.As reaches a
// *pgconn.PgError when PostgreSQL made it fail.
//
//	type CallError struct {
//		Name    string // the function
//		Code    string // the code given to NewCallError, or ""
//		Message string
//		Err     error  // *pgconn.PgError, or nil
//	}
type CallError = forward.CallError

// ErrAdvisoryLock: an advisory lock function refused because it would not
// exclude other regions (a session-level lock outside a transaction, any
// lock in a read-only transaction); nothing ran. Take pg_advisory_xact_lock
// inside db.Transaction.
var ErrAdvisoryLock = callbacks.ErrAdvisoryLock

// ErrPinLost: the pinned primary connection of a db.Connection block (or
// of a held connection of Plugin.DB) broke off, and its session state with
// it; the statement did not run. Rerun the whole block.
var ErrPinLost = forward.ErrPinLost

// ErrPinnedConnection: a statement for the primary on a connection (or a
// transaction) GORM holds of the local replica's own pool, taken directly
// rather than from db.DB() (whose db.Connection blocks pin a primary
// connection instead); nothing ran.
var ErrPinnedConnection = callbacks.ErrPinnedConnection

// SafeToRetry reports whether err certainly left nothing committed, so
// that running the same write (or the whole transaction) again cannot
// apply it twice: the executor was unreachable or busy, a forwarded
// transaction was rolled back, or pgx failed before sending anything. Like
// pgconn.SafeToRetry, it asks the first error in err's chain with a
// SafeToRetry() bool method (pgconn's own errors have one). It is false
// for nil, for in-doubt outcomes and for every write that Committed
// reports.
func SafeToRetry(err error) bool {
	if Committed(err) {
		return false
	}
	var s interface{ SafeToRetry() bool }
	if errors.As(err, &s) {
		return s.SafeToRetry()
	}
	return false
}

// Committed reports whether err says that its write committed on the
// primary although an error came back: a *ReplicationError (the replica is
// behind), a *CommittedError (GORM failed after the commit) or a
// *ResultLostError (the result was lost). It asks the first error in err's
// chain with a Committed() bool method. It is false for nil (a nil error
// needs no such question), for in-doubt outcomes and for failures.
func Committed(err error) bool {
	var c interface{ Committed() bool }
	if errors.As(err, &c) {
		return c.Committed()
	}
	return false
}

// NewCallError returns the error a registered function returns to fail
// with a code the caller can act on: the call then returns a *CallError
// with that Code and message (and the function's transaction rolls back).
func NewCallError(code, message string) error {
	return &forward.CallError{Code: code, Message: message}
}
