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
// In the primary region the plugin changes no statement and costs no query;
// with a bookmark session (WithBookmark, Middleware) it learns the commit
// position of the session's writes with one query per BookmarkFrom. With
// no environment set, both regions are "local": local development needs no
// set-up.
//
// # The executor
//
// The executor is not a separate product: it is flypg's gRPC service, and
// the app's own instances in the primary region serve it. Every node
// serves the service on Config.Port (FLYPG_PORT) with Plugin.Start (in the
// background) or Plugin.Serve (blocking), or adds it to the application's
// own gRPC server with Plugin.RegisterGRPC and Plugin.ServerOptions. In
// the primary region it runs forwarded SQL; in every region it runs
// registered functions (Register, Function.Call, Function.CallRegion).
// cmd/flypg-executor serves the same SQL forwarding as a process of its
// own (a sidecar next to the primary), for deployments that would rather
// not embed it in the app, or that forward from apps in several languages;
// it runs functions of one SQL statement (-function), not the app's
// registered Go functions.
//
// # Errors
//
// A write that committed but was not yet replayed when the wait ended
// returns a *ReplicationError (errors.Is(err, ErrReplicationTimeout));
// the forwarding layer's own errors are *ForwardError values
// (ErrUnavailable: not sent, safe to retry; ErrInDoubt: may have
// committed); PostgreSQL's errors arrive as *pgconn.PgError, so GORM's
// TranslateError works. SafeToRetry and Committed sort them.
//
// # Observability
//
// The core links neither Prometheus nor OpenTelemetry. Config.Tracers takes
// values implementing small tracer interfaces (WriteTracer,
// StatementTracer, WaitTracer, CallTracer, ReplayTracer, GRPCTracer,
// SessionTracer, ExecutorTracer), as pgx's tracers do; package flypgprom
// implements them with Prometheus metrics and package flypgotel with
// OpenTelemetry traces across regions.
//
// # Packages
//
// The pieces live in their own packages: fly (region facts, context
// markers, Fly Postgres URL rewriting), lsn (WAL positions and the
// replication tracker), forward (the forwarding client and its
// database/sql driver), forward/executor (the gRPC executor that runs
// forwarded work on the primary), forward/protocol (the contract both
// share), callbacks (the routing rules), migration (SQL the optional parts
// need), flypgprom and flypgotel (observability adapters) and pgtest (a
// local primary + replica for tests, and cmd/pgtest to run one from a
// shell). This package imports both ends of forwarding, since every node
// forwards and serves; cmd/flypg-executor imports only the executor.
package flypg
