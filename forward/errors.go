package forward

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// Sentinel errors for errors.Is. Every error of the forwarding layer is an
// *Error whose Kind is one of these; PostgreSQL errors arrive unchanged as
// *pgconn.PgError instead.
var (
	// ErrUnavailable: the executor could not be reached and the request was
	// never sent, so nothing ran. Safe to retry; it also matches
	// driver.ErrBadConn so that database/sql retries it on its own.
	ErrUnavailable = errors.New("executor unavailable: request not sent")

	// ErrInDoubt: the request was sent but its reply was lost and the
	// executor could not tell what became of it within the deadline: the
	// write may or may not have committed. Never retry blindly; check the
	// data, or ask Client.Resolve with Error.RequestID.
	ErrInDoubt = protocol.ErrInDoubt

	// ErrTxAborted: a forwarded transaction broke (its stream ended, its
	// context ended, or a limit was hit) before COMMIT was sent, so the
	// primary rolled it back. Safe to run the whole transaction again.
	ErrTxAborted = errors.New("transaction aborted before commit; it was rolled back")

	// ErrUnauthenticated: the executor refused the credentials.
	ErrUnauthenticated = errors.New("executor refused the credentials")

	// ErrTooLarge: a request or result exceeded a configured size limit;
	// nothing was committed.
	ErrTooLarge = errors.New("message exceeds the configured size limit")

	// ErrBusy: the executor could not start the unit before its deadline:
	// all its unit slots stayed taken (it waits for one, as a connection
	// pool would, until shortly before the deadline, or for its
	// QueueTimeout), or its memory for deduplication was full. Nothing
	// ran. Safe to retry later; a rising rate of it means the executor
	// needs more connections (pool_max_conns, MaxConcurrent) or the
	// primary is overloaded.
	ErrBusy = errors.New("executor busy")

	// ErrDatabaseMismatch: the executor serves another database than the
	// one the client's local replica replicates (another cluster, or
	// another database of the same cluster), so a write there would never
	// be read back here. Nothing ran; the error names both sides. A
	// configuration error: fix the executor address or the DSNs.
	ErrDatabaseMismatch = errors.New("the executor serves another database than the local replica replicates")

	// ErrNotPrimary: the node reached does not forward SQL (it is not in the
	// primary region, or its database is not a primary).
	ErrNotPrimary = errors.New("executor does not serve SQL forwarding")

	// ErrProtocol: client and executor speak different protocol versions,
	// or one of them sent a malformed message.
	ErrProtocol = errors.New("protocol error")

	// ErrUnknownFunction: Call named a function the executor has not
	// registered.
	ErrUnknownFunction = protocol.ErrUnknownFunction

	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
)

// Error is an error of the forwarding layer. Kind says what happened (one
// of the sentinels above, matched by errors.Is); Err is the cause.
type Error struct {
	Op        string // "exec", "query", "tx", "commit", "rollback", "call", "resolve", "ping"
	Target    string // the executor address
	RequestID string // hex request ID of the unit, when one was assigned
	Kind      error
	Err       error
	// Limit names the executor limit (a field of executor.Config such as
	// "TxIdleTimeout" or "MaxRequestBytes") that refused or ended the
	// unit, when one did.
	Limit string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "forward: %s via %s", e.Op, e.Target)
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", e.RequestID)
	}
	fmt.Fprintf(&b, ": %v", e.Kind)
	if e.Limit != "" {
		fmt.Fprintf(&b, " (the executor's %s)", e.Limit)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap exposes the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Is makes a never-sent request match driver.ErrBadConn, which tells
// database/sql that retrying on another connection is safe.
func (e *Error) Is(target error) bool {
	return target == driver.ErrBadConn && e.Kind == ErrUnavailable
}

// SafeToRetry reports whether the unit certainly did not run, like
// pgconn.SafeToRetry.
func (e *Error) SafeToRetry() bool {
	switch e.Kind {
	case ErrUnavailable, ErrBusy, ErrTxAborted:
		return true
	}
	return false
}

// CommittedError reports a unit that committed although its full result
// could not be delivered (for example the executor no longer held a large
// result when a retry asked for it). The write is on the primary at LSN.
type CommittedError struct {
	Op        string
	RequestID string
	LSN       lsn.LSN
	Reason    string
}

// Committed reports that the unit is on the primary: always true.
func (e *CommittedError) Committed() bool { return true }

func (e *CommittedError) Error() string {
	return fmt.Sprintf("forward: %s (request %s) committed at %s but %s", e.Op, e.RequestID, e.LSN, e.Reason)
}
