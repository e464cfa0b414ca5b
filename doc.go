// Package flypg brings the Fly Postgres model to GORM: an app runs in many
// regions, one PostgreSQL primary lives in the primary region and a
// streaming read replica in each other region.
//
// With db.Use(flypg.New(cfg)) an existing GORM app keeps its models and
// queries while, in a replica region:
//
//   - reads run on the local replica;
//   - creates, updates, deletes and write SQL are forwarded over gRPC to an
//     executor in the primary region, which runs them on the primary and
//     returns the commit LSN;
//   - the caller then waits until its local replica has replayed that LSN,
//     so that its next read sees its write, unless the context says
//     fly.NoAwait;
//   - transactions (db.Transaction, db.Begin) run on the primary as one
//     forwarded transaction, and wait once, after COMMIT;
//   - fly.Local in the context bypasses all of it (migrations).
//
// In the primary region the plugin changes nothing and costs nothing. With
// no environment set, both regions are "local": local development needs no
// set-up.
//
// Every node serves a gRPC service (Plugin.Serve or Plugin.RegisterGRPC):
// SQL forwarding in the primary region, and registered functions
// (Register, Call, CallRegion) everywhere.
//
// A write that committed but was not yet replayed when the wait ended
// returns a *ReplicationError (errors.Is(err, ErrReplicationTimeout)); the
// forwarding layer's own errors are *forward.Error values (ErrUnavailable:
// not sent, safe to retry; ErrInDoubt: may have committed); PostgreSQL's
// errors arrive as *pgconn.PgError, so GORM's TranslateError works.
//
// The pieces live in their own packages: fly (region facts and context
// markers), lsn (WAL positions and the replication tracker), forward (the
// gRPC executor and the forwarding database/sql driver), callbacks (the
// routing rules), migration (SQL the optional parts need) and pgtest (a
// local primary + replica for tests).
package flypg
