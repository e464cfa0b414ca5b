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
//   - inside a transaction: nothing changes, the transaction owns its
//     connection (a forwarded transaction sends reads to the primary too);
//   - an override clause (flypg.UsePrimary, flypg.UseLocal) decides;
//   - Create, Update and Delete go to the primary;
//   - raw SQL (Raw, Exec) stays local only when IsRead says it is a read;
//   - queries built by GORM stay local, unless they lock rows
//     (clause.Locking).
//
// A forwarded write carries a forward.Receipt in its context; after the
// chain (and after GORM's implicit COMMIT) the await callback waits until
// the local replica has replayed the receipt's commit LSN, unless the
// context says fly.NoAwait.
package callbacks
