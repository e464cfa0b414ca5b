package callbacks

import (
	"errors"
	"fmt"

	"github.com/flypg/flypg/lsn"
)

// ErrAdvisoryLock matches the error of a statement calling an advisory lock
// function where the lock would not exclude other regions: a session-level
// lock (pg_advisory_lock, pg_try_advisory_lock, their _shared variants and
// the unlock functions) outside a transaction, whose holder would be a
// pooled connection of the executor serving other callers next; or any lock
// in a read-only transaction, which runs on the local replica. Nothing ran.
// Take pg_advisory_xact_lock (or pg_try_advisory_xact_lock) inside
// db.Transaction: the transaction runs on one primary connection and the
// lock ends with it.
var ErrAdvisoryLock = errors.New("flypg: advisory lock refused")

// ErrPinnedConnection matches the error of a statement that must run on
// the primary (a write, SQL that is not a read, a lock) on a connection or
// transaction GORM holds of the local replica's own pool, taken directly
// rather than from the routed database (Router.Routed, whose connections
// pin a primary connection when needed); nothing ran. Use db.Connection
// or db.Transaction, or write outside the block.
var ErrPinnedConnection = errors.New("flypg: the statement holds a connection of the local replica's pool; statements for the primary cannot run on it")

func sessionLockError() error {
	return fmt.Errorf("%w: a session-level lock outside a transaction would be held by a pooled connection of the executor, which serves other callers next; take pg_advisory_xact_lock inside a transaction instead", ErrAdvisoryLock)
}

func localLockError() error {
	return fmt.Errorf("%w: a read-only transaction runs on the local replica, which grants advisory locks against its own sessions alone; take the lock in a read-write transaction, which runs on the primary", ErrAdvisoryLock)
}

// CommittedError reports a forwarded write that committed on the primary
// although GORM reported an error after its statement (a callback or the
// scan of RETURNING values failed after COMMIT had travelled with the
// statement). Plain GORM would have rolled back; flypg could not, and says
// so rather than report a committed write as failed. Err is GORM's error.
type CommittedError struct {
	LSN lsn.LSN // the commit LSN
	Err error
}

func (e *CommittedError) Error() string {
	return fmt.Sprintf("flypg: the write committed on the primary at %s, but GORM reported an error after its statement: %v", e.LSN, e.Err)
}

func (e *CommittedError) Unwrap() error { return e.Err }

// Committed reports that the write is on the primary: always true.
func (e *CommittedError) Committed() bool { return true }

// committer is the predicate of errors that say their write committed.
type committer interface{ Committed() bool }

func saysCommitted(err error) bool {
	var c committer
	return errors.As(err, &c) && c.Committed()
}
