// Package flypg brings the Fly Postgres model to GORM: an app runs in many
// regions, one PostgreSQL primary lives in the primary region and a
// streaming read replica in each other region.
//
// With db.Use(flypg.New(cfg)) an existing GORM app keeps its models and
// queries while reads run on the local replica, writes are forwarded over
// gRPC to an executor in the primary region, and the caller waits until its
// local replica has replayed the write (read-your-writes), unless it asked
// not to with fly.NoAwait.
//
// The pieces live in their own packages: fly (region facts and context
// markers), lsn (WAL positions and the replication tracker), forward (the
// gRPC executor and the forwarding database/sql driver), migration (SQL the
// optional parts need) and pgtest (a local primary + replica for tests).
package flypg
