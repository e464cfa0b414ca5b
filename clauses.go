package flypg

import "github.com/flypg/flypg/callbacks"

// Per-statement routing overrides, in the style of gorm.io/plugin/dbresolver:
//
//	db.Clauses(flypg.UsePrimary).Raw("SELECT nextval('ticket')").Scan(&n)
//	db.Clauses(flypg.UseLocal).Exec("SET LOCAL statement_timeout = 100")
const (
	// UsePrimary runs the statement on the primary: raw SQL with side
	// effects (nextval, a writing function), which then waits for
	// replication like any write, or a query built by GORM that must see
	// the latest data without waiting for the replica.
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
