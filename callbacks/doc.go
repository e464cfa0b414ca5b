// Package callbacks holds the GORM side of flypg in a replica region: the
// callbacks that route each statement to the local replica or to the
// forwarding pool and wait for replication afterwards, and the connection
// pool installed in the *gorm.DB that forwards transactions.
//
// Most applications use it through package flypg (db.Use(flypg.New(cfg)));
// it is a package of its own so that the routing rules can be read, tested
// and reused in one place.
//
// Routing, in order:
//   - fly.Local in the statement's context: nothing changes (migrations,
//     tools that must talk to the local database);
//   - inside a forwarded transaction: nothing changes, the transaction owns
//     its connection on the primary (reads run there too);
//   - inside a read-only transaction on the replica: nothing changes, but
//     advisory lock functions fail with ErrAdvisoryLock;
//   - inside a db.Connection block (or a transaction begun in one), which
//     holds a local connection: statements that must run on the primary
//     fail with ErrPinnedConnection;
//   - an override clause (flypg.UsePrimary, flypg.UseLocal) decides;
//   - Create, Update, Delete and Exec go to the primary;
//   - raw SQL (Raw) stays local only when IsRead says it is a read, which
//     includes calling none of PrimaryFunctions;
//   - queries built by GORM stay local, unless they lock rows
//     (clause.Locking) or select or filter with one of PrimaryFunctions;
//   - a session-level advisory lock outside a transaction fails with
//     ErrAdvisoryLock.
//
// A forwarded write carries a forward.Receipt in its context; after the
// chain (and after GORM's implicit COMMIT) the await callback waits until
// the local replica has replayed the receipt's commit LSN, unless the
// context says fly.NoAwait. When nothing in GORM's callback chain after
// the statement can fail or write, COMMIT travels with the statement.
//
// Router.OpenDB gives database/sql code the same routing and waits.
package callbacks
