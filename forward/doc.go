// Package forward runs SQL from replica regions on the primary: a gRPC
// executor in the primary region, and a database/sql driver whose
// connections forward every statement to it.
//
// # Executor (primary region)
//
//	x, err := executor.New(ctx, executor.Config{DSN: primaryDSN, Secret: secret})
//	go x.Serve(lis) // or x.Register(yourGRPCServer)
//	defer x.Close()
//
// The executor runs each forwarded statement on the primary, reads the WAL
// position after its commit (normalized with lsn.LSN.Normalize's rule) and
// returns the rows, the command tag and that commit LSN. A lone statement
// is one round trip to the primary (statement, Sync, LSN query, Sync in one
// pipeline); a transaction is one gRPC stream pinned to one primary
// connection, with BEGIN sent together with its first statement, and COMMIT
// together with its last statement (LastStatement) or with the LSN query.
// Lone statements travel as messages of a few long-lived "session" streams
// rather than as one call each, which costs both sides far less. It cancels the query on
// the primary when the caller gives up, rolls back a transaction whose
// stream breaks or idles, bounds request and result sizes, and reports
// NOT_SERVING on the standard gRPC health service while the primary is
// unreachable or in recovery.
//
// # Client and driver (replica regions)
//
//	c, err := forward.NewClient(forward.ClientConfig{Target: "dns:///iad.myapp.internal:5444", Secret: secret})
//	db := c.OpenDB() // a *sql.DB; GORM can use it as a connection pool
//
// Results decode exactly as pgx's stdlib driver decodes them, and
// PostgreSQL errors arrive as *pgconn.PgError with every field, so
// gorm's TranslateError works unchanged. The commit LSN reaches the caller
// through a Receipt in the context (WithReceipt); for a transaction it is the
// context given to BeginTx.
//
// # Failures and exactly-once
//
// Every forwarded unit carries a random request ID. The executor remembers
// recent IDs with their outcome (see ExecutorConfig.DedupWindow), so when a
// reply is lost the client asks again with the same ID and gets the first
// answer instead of a second execution. A request that provably never left
// fails with ErrUnavailable (safe to retry; it matches driver.ErrBadConn so
// database/sql retries it itself). When the outcome cannot be learned
// within the deadline — the executor that ran it restarted, or the primary's
// connection broke during COMMIT — the error matches ErrInDoubt: the write
// may have committed, and it is never retried blindly. Client.Resolve asks
// later.
//
// # Isolation and capacity
//
// Units share the executor's pool of primary connections, and nothing one
// leaves in its session reaches another: a statement that can create
// session state (SET, temporary tables, prepared statements, LISTEN,
// session advisory locks, ...) closes its connection after its unit, and
// one that calls unknown functions has the session checked in the same
// round trip as its commit LSN (see the README for the rule). Units wait
// for a slot as a pool's callers wait for a connection, until shortly
// before their deadline; transactions, which hold theirs across round
// trips, never take the last quarter. The executor's memory is bounded: its
// deduplication ledger by DedupMaxBytes, each session stream by
// SessionMaxBytes (beyond which it stops reading the stream).
//
// # Security
//
// The executor runs SQL for whoever calls it. With a shared secret, client
// and executor speak only mutual TLS 1.3 keyed from it (an Ed25519 key and a
// certificate derived from the secret, the same on every node, pinned by
// both sides): a peer without the secret fails the handshake before any of
// its messages is read, and nothing recorded off the network means
// anything on another connection. Every connection, stream, header, message
// and decoded argument is bounded (ExecutorConfig). Without a secret the
// executor serves loopback callers only, checked for every call. Your own
// TLS certificate can replace the derived one (ClientConfig.TLS and your own
// *grpc.Server); calls then carry an HMAC of the secret.
package forward
