// Package forward is the client side of SQL forwarding: a replica region's
// connection to the executor in the primary region (package
// forward/executor), and a database/sql driver whose connections forward
// every statement to it.
//
//	c, err := forward.NewClient(forward.ClientConfig{Target: "dns:///iad.myapp.internal:5480", Secret: secret})
//	db := c.OpenDB() // a *sql.DB; GORM can use it as a connection pool
//
// Results decode exactly as pgx's stdlib driver decodes them, and
// PostgreSQL errors arrive as *pgconn.PgError with every field, so
// gorm's TranslateError works unchanged. The commit LSN reaches the caller
// through a Receipt in the context (WithReceipt); for a transaction it is the
// context given to BeginTx.
//
// # Round trips
//
// A lone statement is one message of one of a few long-lived session
// streams (a call of its own when it is large, or with
// ClientConfig.NoSessions); the executor runs it on the primary with its
// COMMIT and the read of the commit LSN in one round trip to the primary.
// A transaction is one stream pinned to one primary connection, with BEGIN
// sent together with its first statement, and COMMIT together with its
// last statement (LastStatement) or alone. A large result arrives in parts,
// on a Fetch stream of the caller's own. A connection pinned with Pin runs
// everything, one unit after another, on one primary connection held by a
// Pin stream, so that session state one statement sets is there for the
// next (SetsSessionState says which statements need that).
//
// # Failures and exactly-once
//
// Every forwarded unit carries a random request ID. The executor remembers
// recent IDs with their outcome, so when a reply is lost the client asks
// again with the same ID and gets the first answer instead of a second
// execution, within protocol.RetryHorizon of the first attempt. A request
// that provably never left fails with ErrUnavailable (safe to retry; it
// matches driver.ErrBadConn so database/sql retries it itself). When the
// outcome cannot be learned within the deadline — the executor that ran it
// restarted, or the primary's connection broke during COMMIT — the error
// matches ErrInDoubt: the write may have committed, and it is never
// retried blindly. Client.Resolve asks later.
//
// The client decides what a failure means from gRPC status codes and the
// typed facts the executor sends with them (package protocol: the unit's
// outcome, a refusal reason, the limit that ended it), never from message
// text; a request over its own send limit (ClientConfig.MaxSendBytes) fails
// with ErrTooLarge before it is sent.
//
// # Security
//
// With a shared secret, client and executor speak only mutual TLS 1.3
// keyed from it (an Ed25519 key and a certificate derived from the secret,
// the same on every node, pinned by both sides): an executor that does not
// know the secret fails the handshake, and the client reports
// ErrUnauthenticated. Without a secret the connection is plaintext, which
// only an executor without a secret, on loopback, accepts. Your own TLS
// (ClientConfig.TLS) can replace the derived one; calls then carry an HMAC
// of the secret.
//
// # Imports
//
// forward imports the contract (forward/protocol and the generated
// forward/forwardpb), the wire encoding of values and errors
// (forward/internal/wire), the authentication helpers
// (forward/internal/auth), the SQL scanner (forward/internal/sqlscan) and
// lsn; never the executor, so an app in a replica region links no server
// code, and the executor links no client.
package forward
