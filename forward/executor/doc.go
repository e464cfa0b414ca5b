// Package executor is the server side of SQL forwarding: the gRPC service
// that runs, on the primary, the SQL that replica regions forward with
// package forward, and the functions they call by name.
//
//	x, err := executor.New(ctx, executor.Config{DSN: primaryDSN, Secret: secret})
//	go x.Serve(lis) // or x.Register(yourGRPCServer) with x.ServerOptions()
//	defer x.Close()
//
// The executor runs each forwarded statement on the primary, reads the WAL
// position after its commit (normalized with lsn.LSN.Normalize's rule) and
// returns the rows, the command tag and that commit LSN. A lone statement
// is one round trip to the primary (statement, Sync, LSN query, Sync in one
// pipeline: pipeline.go); a transaction is one gRPC stream pinned to one
// primary connection (service_tx.go), with BEGIN sent together with its
// first statement, and COMMIT together with its last statement or with the
// LSN query. Lone statements arrive as messages of a few long-lived session
// streams (service_session.go) rather than as one call each, which costs
// both sides far less; a large result leaves in parts (service_fetch.go).
// A Pin stream (service_pin.go) holds one primary connection for a
// client's pinned connection and runs its units on it one after another.
// It cancels the query on the primary when the caller gives up, rolls back
// a transaction whose stream breaks or idles, and reports NOT_SERVING on
// the standard gRPC health service while the primary is unreachable or in
// recovery.
//
// # Exactly-once
//
// Every unit carries a request ID. The ledger (ledger.go) remembers recent
// IDs with their outcome for Config.DedupWindow, longer than a client
// retries (protocol.RetryHorizon), so that a retry after a lost reply gets
// the first answer instead of a second execution; with DurableDedup the
// IDs of committed units are also written to a table on the primary in the
// unit's own transaction (durable.go), which settles retries across
// restarts and instances. When a unit ends with a gRPC error, its trailer
// (package protocol) says whether it committed, why it was refused and
// which limit ended it.
//
// # Isolation and capacity
//
// Units share the executor's pool of primary connections, and nothing one
// leaves in its session reaches another: a statement that can create
// session state (SET, temporary tables, prepared statements, LISTEN,
// session advisory locks, ...) closes its connection after its unit, and
// one that calls unknown functions has the session checked in the same
// round trip as its commit LSN (sessionstate.go, by the classes of
// forward/internal/sqlscan). Units wait for a slot as
// a pool's callers wait for a connection, until shortly before their
// deadline; transactions, which hold theirs across round trips, never take
// the last quarter. The executor's memory is bounded: its ledger by
// DedupMaxBytes, each session stream by SessionMaxBytes (beyond which it
// stops reading the stream).
//
// # Security
//
// The executor runs SQL for whoever calls it, so it decides who a caller
// is before reading what they send (security.go). With a shared secret it
// speaks only mutual TLS 1.3 keyed from it: a peer without the secret
// fails the handshake before any of its messages is read, and nothing
// recorded off the network means anything on another connection. Every
// connection, stream, header, message and decoded argument is bounded
// (Config; codec.go counts arguments before decoding). Without a secret
// the executor serves loopback callers only, checked for every call. On
// the application's own gRPC server with its own TLS certificate
// (Register), calls carry an HMAC of the secret instead.
//
// # Imports
//
// executor imports the contract (forward/protocol and the generated
// forward/forwardpb), the wire encoding (forward/internal/wire), the
// authentication (forward/internal/auth), the SQL scanner
// (forward/internal/sqlscan), lsn and pgx; never the client package
// forward, so cmd/flypg-executor links no client code.
package executor
