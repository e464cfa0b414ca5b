package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/lsn"
)

// This file runs forwarded work on a primary connection. The shapes are
// chosen for round trips to the primary: BEGIN travels with the first
// statement in one pipeline, and COMMIT travels with the reads of the
// transaction ID before it and of the insert LSN after it, in one simple
// query.

// PoolConfig parses dsn into a pgxpool configuration suited to the
// executor: when a forwarded call is cancelled, the running query on the
// primary is cancelled too (a CancelRequest, not just a closed socket,
// which PostgreSQL would not notice until the query ends), and without
// pool_max_conns in dsn the pool has DefaultPoolMaxConns connections
// (pgxpool's own default follows the CPU count, not the concurrency of
// forwarded units).
func PoolConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("forward: parse primary DSN: %w", err)
	}
	if raw, err := pgconn.ParseConfig(dsn); err == nil {
		if _, set := raw.RuntimeParams["pool_max_conns"]; !set {
			cfg.MaxConns = DefaultPoolMaxConns
		}
	}
	cfg.ConnConfig.BuildContextWatcherHandler = cancelRequestHandler
	return cfg, nil
}

func cancelRequestHandler(c *pgconn.PgConn) ctxwatchHandler {
	return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelDeadlineDelay}
}

// stmtError is a failure of a statement: either PostgreSQL's error (sent
// back in-band, the connection stays usable) or a failure of the
// connection or of the request itself.
type stmtError struct {
	pg   *pgconn.PgError
	err  error
	kind stmtErrorKind
	// res, with kindPg for a lone statement: its result, produced before
	// its COMMIT failed with pg.
	res *forwardpb.Result
}

type stmtErrorKind int

const (
	kindPg                stmtErrorKind = iota // PostgreSQL rejected the statement
	kindBadArg                                 // the request was malformed
	kindTooLarge                               // the result exceeded the limit; nothing committed
	kindTooLargeCommitted                      // the result exceeded the limit after the statement committed
	kindConn                                   // the primary connection failed; nothing committed
	kindConnInDoubt                            // the primary connection failed; the statement may have committed
	kindConnRecorded                           // as kindConnInDoubt, but the request ID went with it: the durable table settles it
	kindLedgerFailed                           // durable deduplication: the ID's insert failed (pg set); nothing ran now, but an earlier attempt may have
	kindCommittedEarlier                       // durable deduplication: an earlier attempt committed it
	kindTombstoned                             // durable deduplication: declared not committed by a Resolve
)

func stmtErrorOf(err error) *stmtError {
	if err == nil {
		return nil
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return &stmtError{pg: pg, err: err, kind: kindPg}
	}
	var tl *wire.ResultTooLargeError
	if errors.As(err, &tl) {
		return &stmtError{err: err, kind: kindTooLarge}
	}
	return &stmtError{err: explainRowLimit(err), kind: kindConn}
}

func decodeArgs(vals []*forwardpb.Value) ([]any, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	args := make([]any, len(vals))
	for i, v := range vals {
		a, err := wire.DecodeArg(v)
		if err != nil {
			return nil, fmt.Errorf("argument $%d: %w", i+1, err)
		}
		args[i] = a
	}
	return args, nil
}

// beginSQL builds the BEGIN statement for a transaction's options. The
// isolation level comes from the client, so only known levels pass.
func beginSQL(isolation string, readOnly, deferrable bool) (string, error) {
	var b strings.Builder
	b.WriteString("BEGIN")
	switch strings.ToLower(strings.TrimSpace(isolation)) {
	case "":
	case "read uncommitted":
		b.WriteString(" ISOLATION LEVEL READ UNCOMMITTED")
	case "read committed":
		b.WriteString(" ISOLATION LEVEL READ COMMITTED")
	case "repeatable read":
		b.WriteString(" ISOLATION LEVEL REPEATABLE READ")
	case "serializable":
		b.WriteString(" ISOLATION LEVEL SERIALIZABLE")
	default:
		return "", fmt.Errorf("unsupported isolation level %q", isolation)
	}
	if readOnly {
		b.WriteString(" READ ONLY")
	}
	if deferrable {
		b.WriteString(" DEFERRABLE")
	}
	return b.String(), nil
}

// commitResult is what COMMIT produced.
type commitResult struct {
	lsn        lsn.LSN // normalized insert LSN after COMMIT
	rolledBack bool    // the transaction had failed: COMMIT rolled it back
}

const commitSQL = `COMMIT; SELECT pg_current_wal_insert_lsn()::text`

// commit commits the open transaction and reads the insert LSN after it,
// in one round trip (a simple query of two statements: the SELECT runs
// after COMMIT, outside the transaction). pg_current_wal_insert_lsn() read
// after COMMIT returns is at or past the commit record.
func (x *Executor) commit(ctx context.Context, c *pgx.Conn, id []byte) (commitResult, *stmtError) {
	q, skip := commitSQL, 0
	if taintOf(c) == taintMaybe {
		// The transaction called functions: check in the same round trip
		// that they left no session state behind.
		q += ", " + stateCheckSQL
	}
	if x.durable != nil && id != nil {
		// The request ID commits with the transaction (see durable.go);
		// the simple protocol has no parameters, and the ID is our bytes.
		q, skip = fmt.Sprintf("INSERT INTO %s (id, committed) VALUES ('\\x%x', true); ", x.durable.table, id)+q, 1
	}
	results, err := c.PgConn().Exec(ctx, q).ReadAll()
	if err != nil {
		var pg *pgconn.PgError
		if skip == 1 && (x.durable.isConflict(err) || errors.As(err, &pg) && pg.Code == "25P02") {
			// A Resolve elsewhere declared the transaction not committed
			// (a tombstone), or an earlier statement failed (what COMMIT
			// alone would answer with ROLLBACK): it does not commit.
			if _, rerr := c.PgConn().Exec(ctx, "ROLLBACK").ReadAll(); rerr != nil {
				return commitResult{}, stmtErrorOf(rerr)
			}
			return commitResult{rolledBack: true}, nil
		}
		return commitResult{}, stmtErrorOf(err)
	}
	if len(results) != 2+skip {
		return commitResult{}, &stmtError{err: fmt.Errorf("commit: %d results, want %d", len(results), 2+skip), kind: kindConn}
	}
	results = results[skip:]
	if results[0].CommandTag.String() == "ROLLBACK" {
		// COMMIT of a transaction in which a statement failed.
		return commitResult{rolledBack: true}, nil
	}
	var cr commitResult
	if rows := results[1].Rows; len(rows) == 1 && len(rows[0]) > 1 {
		noteStateCheck(c, rows[0][1])
	}
	if rows := results[1].Rows; len(rows) == 1 && rows[0][0] != nil {
		l, err := lsn.Parse(string(rows[0][0]))
		if err != nil {
			return commitResult{}, &stmtError{err: fmt.Errorf("commit: bad LSN %q", rows[0][0]), kind: kindConn}
		}
		cr.lsn = l.Normalize(x.segmentSize(ctx, c))
	}
	return cr, nil
}

func (x *Executor) rollback(ctx context.Context, c *pgx.Conn) error {
	_, err := c.PgConn().Exec(ctx, "ROLLBACK").ReadAll()
	return err
}

// segmentSize returns the primary's wal_segment_size, read once.
func (x *Executor) segmentSize(ctx context.Context, c *pgx.Conn) uint64 {
	if v := x.walSegSize.Load(); v != 0 {
		return v
	}
	var s string
	if err := c.QueryRow(ctx, lsn.SegmentSizeSQL).Scan(&s); err != nil {
		return lsn.DefaultSegmentSize
	}
	n := lsn.ParseSegmentSize(s)
	x.walSegSize.Store(n)
	return n
}
