package flypg

import (
	"time"

	"github.com/flypg/flypg/forward/executor"
)

// ExecutorConfig holds the limits of the executor a primary-region node
// serves (Plugin.Serve, Start, RegisterGRPC). Zero fields take the
// defaults the README's configuration table lists. What the plugin decides
// itself — the connection to the primary (Config.PrimaryDSN), the secret,
// the logger, registered functions, tracing — is in Config, not here.
// cmd/flypg-executor sets the same limits with flags.
type ExecutorConfig struct {
	// MaxConcurrent bounds the units (statements, transactions, calls,
	// resolves that read the primary) run at once; default the pool's size
	// (pool_max_conns in the DSN, else 20). More wait for a slot, as plain
	// GORM waits for its pool: until shortly before the unit's deadline,
	// or for QueueTimeout if that is set and shorter; then they fail with
	// ErrBusy, nothing run. Transactions take at most three quarters of
	// the slots.
	MaxConcurrent int
	QueueTimeout  time.Duration

	// MaxRequestBytes bounds one request (default 8 MiB), MaxResponseBytes
	// one statement's result (default 16 MiB).
	MaxRequestBytes, MaxResponseBytes int
	// MaxArgValues bounds the argument values of one request, each array
	// element counting (default 100,000); a request with more is refused
	// before it is decoded. MaxRowBytes bounds one message from the
	// primary, hence one result row, before it is buffered (default
	// MaxResponseBytes plus 64 KiB).
	MaxArgValues, MaxRowBytes int

	// MaxConnections bounds the connections the executor holds (default
	// 1,024); more are closed at once. HandshakeTimeout bounds a
	// connection's TLS handshake and first frames (default 10s);
	// IdleConnTimeout closes a connection without calls (default 5m).
	// MaxStreamsPerConn bounds the calls open at once on one connection
	// (default 256), MaxHeaderBytes the headers of one call (default
	// 32 KiB). The README's Security section says what each bounds.
	MaxConnections, MaxStreamsPerConn, MaxHeaderBytes int
	HandshakeTimeout, IdleConnTimeout                 time.Duration

	// TxIdleTimeout rolls back a forwarded transaction that waits this long
	// for its next statement, and closes a pinned connection (db.Connection)
	// idle this long between statements (default 5m); TxMaxDuration rolls
	// back a transaction open this long (default 1h).
	TxIdleTimeout, TxMaxDuration time.Duration

	// StatementTimeout, if set, is the primary's statement_timeout for
	// forwarded statements.
	StatementTimeout time.Duration

	// DedupWindow is how long the answer of a finished unit is kept for a
	// retry of it (default 30s, at least executor.MinDedupWindow);
	// DedupMaxBytes bounds the memory of kept answers (default 64 MiB);
	// answers over MaxReplayBytes (default 16 KiB) are not kept — a retry
	// then learns only that the unit committed (a *ResultLostError).
	DedupWindow    time.Duration
	DedupMaxBytes  int
	MaxReplayBytes int

	// SessionMaxBytes bounds the requests and unsent replies one session
	// stream may hold (default 32 MiB); beyond it the executor stops
	// reading that stream.
	SessionMaxBytes int

	// DurableDedup also records each committed unit's request ID in a
	// table on the primary (DedupTable, default "flypg_requests"; rows kept
	// DedupRetention, default 10m), in the unit's own transaction:
	// exactly-once across executor restarts and instances.
	DurableDedup   bool
	DedupTable     string
	DedupRetention time.Duration

	// HealthInterval is how often the executor checks the primary for the
	// gRPC health service (default 1s).
	HealthInterval time.Duration
}

// executorConfig maps the limits onto the executor package's configuration;
// the plugin fills in the rest.
func (c ExecutorConfig) executorConfig() executor.Config {
	return executor.Config{
		MaxConcurrent:     c.MaxConcurrent,
		QueueTimeout:      c.QueueTimeout,
		MaxRequestBytes:   c.MaxRequestBytes,
		MaxResponseBytes:  c.MaxResponseBytes,
		MaxArgValues:      c.MaxArgValues,
		MaxRowBytes:       c.MaxRowBytes,
		MaxConnections:    c.MaxConnections,
		MaxStreamsPerConn: c.MaxStreamsPerConn,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		HandshakeTimeout:  c.HandshakeTimeout,
		IdleConnTimeout:   c.IdleConnTimeout,
		TxIdleTimeout:     c.TxIdleTimeout,
		TxMaxDuration:     c.TxMaxDuration,
		StatementTimeout:  c.StatementTimeout,
		DedupWindow:       c.DedupWindow,
		DedupMaxBytes:     c.DedupMaxBytes,
		MaxReplayBytes:    c.MaxReplayBytes,
		SessionMaxBytes:   c.SessionMaxBytes,
		DurableDedup:      c.DurableDedup,
		DedupTable:        c.DedupTable,
		DedupRetention:    c.DedupRetention,
		HealthInterval:    c.HealthInterval,
	}
}
