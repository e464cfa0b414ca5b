package flypg

import "github.com/flypg/flypg/callbacks"

// Per-statement routing overrides, in the style of gorm.io/plugin/dbresolver:
//
//	db.Clauses(flypg.UsePrimary).Raw("SELECT my_counter_next()").Scan(&n)
//	db.Clauses(flypg.UseLocal).Exec("SET LOCAL statement_timeout = 100")
const (
	// UsePrimary runs the statement on the primary: raw SQL with side
	// effects flypg cannot see in its text (a function of your own that
	// writes), which then waits for replication like any write, or a query
	// built by GORM that must see the latest data without waiting for the
	// replica. Built-in writing functions (nextval, setval, pg_notify, ...)
	// need no override.
	UsePrimary = callbacks.RoutePrimary
	// UseLocal runs the statement on the local database whatever it is.
	UseLocal = callbacks.RouteLocal
)

// ReplicationError reports a write that committed on the primary but that
// the local replica had not yet replayed when the wait ended; see
// ErrReplicationTimeout. GORM's result fields (IDs, RowsAffected) are filled
// in as for a successful write.
type ReplicationError = callbacks.ReplicationError

// ErrReplicationTimeout matches a ReplicationError whose wait ran out of
// time: errors.Is(db.Create(&u).Error, flypg.ErrReplicationTimeout). The
// write committed.
var ErrReplicationTimeout = callbacks.ErrReplicationTimeout

// WriteEvent describes one forwarded write, for Config.OnWrite.
type WriteEvent = callbacks.Event

// CommittedError reports a forwarded write that committed on the primary
// although GORM reported an error after its statement, where plain GORM
// would have rolled back; errors.Unwrap gives GORM's error. See the
// README's routing rules for when that can happen.
type CommittedError = callbacks.CommittedError

// ErrAdvisoryLock: an advisory lock function refused because it would not
// exclude other regions (a session-level lock outside a transaction, any
// lock in a read-only transaction); nothing ran. Take pg_advisory_xact_lock
// inside db.Transaction.
var ErrAdvisoryLock = callbacks.ErrAdvisoryLock

// ErrPinnedConnection: a statement for the primary inside a db.Connection
// block (or a transaction begun in one), which holds a local replica
// connection; nothing ran.
var ErrPinnedConnection = callbacks.ErrPinnedConnection
