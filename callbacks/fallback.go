package callbacks

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/lsn"
)

// ReadStats count what availability did with statements the routing rules
// left on the local replica.
type ReadStats struct {
	// OnPrimary: statements run on the primary because reads were there
	// (Mode().Primary).
	OnPrimary uint64
	// Fallbacks: statements the local replica failed because it could not
	// be reached (or cancelled for a recovery conflict), run again on the
	// primary.
	Fallbacks uint64
	// SafetyNetReruns: statements the local replica refused as read-only
	// (SQLSTATE 25006, 0A000), run again on the primary.
	SafetyNetReruns uint64
	// Probes: looks at the local replica while reads ran on the primary.
	Probes uint64
}

type readCounters struct {
	onPrimary, fallbacks, reruns, probes atomic.Uint64
}

// ReadStats returns the Router's availability counters.
func (r *Router) ReadStats() ReadStats {
	return ReadStats{OnPrimary: r.reads.onPrimary.Load(), Fallbacks: r.reads.fallbacks.Load(), SafetyNetReruns: r.reads.reruns.Load(), Probes: r.reads.probes.Load()}
}

// localFailure is what a local statement's error allows.
type localFailure uint8

const (
	failOther       localFailure = iota // the statement's own error: returned
	failUnreachable                     // the replica cannot be reached: reads move to the primary
	failConflict                        // cancelled for a recovery conflict: this statement reruns on the primary
	failReadOnly                        // refused as read-only: the safety net reruns it on the primary
)

// classifyLocal says what err, from a statement outside a transaction on
// the local replica under ctx, allows. The caller's own context ending is
// never the replica's fault.
func classifyLocal(ctx context.Context, err error) localFailure {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return failOther
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "25006", // read_only_sql_transaction
			"0A000": // feature_not_supported: temporary and unlogged relations during recovery
			return failReadOnly
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return failUnreachable
		case "40001", "40P01": // outside a transaction on a hot standby: a recovery conflict
			return failConflict
		}
		return failOther
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return failUnreachable
	}
	return failOther
}

// runLocal runs a statement that the routing rules leave on the local
// replica, outside a transaction: on the primary instead when readRoute
// says so, and on the primary once more when the replica fails it in a way
// that allows it — it could not be reached, or it refused the statement as
// read-only. Running it again there is safe: a hot standby changes nothing
// (it refuses every write, and was refused here or never reached), so the
// statement runs once on the primary, which is where it would have run had
// the routing rules known. fly.Local statements are left alone.
func runLocal[T any](r *Router, ctx context.Context, query string, local, primary func(context.Context) (T, error)) (T, error) {
	if fly.IsLocal(ctx) {
		return local(ctx)
	}
	if on, reason := r.readRouteOnce(ctx); on {
		r.reads.onPrimary.Add(1)
		r.debug("flypg: read on the primary", "reason", reason)
		return primary(ctx)
	}
	v, err := local(ctx)
	if err == nil {
		return v, nil
	}
	switch classifyLocal(ctx, err) {
	case failReadOnly:
		r.demoted()
		if !r.SafetyNet {
			return v, err
		}
		r.reads.reruns.Add(1)
		r.safetyNetLog(query, err)
		return primary(ctx)
	case failUnreachable:
		if !r.Fallback {
			return v, err
		}
		r.leave(ReasonUnreachable, err)
	case failConflict:
		if !r.Fallback {
			return v, err
		}
	default:
		return v, err
	}
	r.reads.fallbacks.Add(1)
	r.debug("flypg: local statement failed, run on the primary", "err", err)
	return primary(ctx)
}

// primaryConn is where a statement for the primary runs: the forwarding
// pool, or a pinned connection of it.
type primaryConn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// queryPrimary runs a query on the primary outside a transaction, then
// waits for what it committed (a function it called may write). The
// forwarding driver holds the whole result when the query returns: the
// commit is already recorded. After a failed wait the rows are not
// returned: the *ReplicationError says the statement committed.
func (r *Router) queryPrimary(ctx context.Context, on primaryConn, query string, args []any) (*sql.Rows, error) {
	wctx, rcpt := forward.WithReceipt(ctx)
	rows, err := on.QueryContext(wctx, query, args...)
	if _, _, werr := r.wait(ctx, rcpt); werr != nil {
		if err == nil {
			rows.Close()
		}
		return nil, werr
	}
	return rows, err
}

// execPrimary runs a statement on the primary outside a transaction, then
// waits for its commit.
func (r *Router) execPrimary(ctx context.Context, on primaryConn, query string, args []any) (sql.Result, error) {
	wctx, rcpt := forward.WithReceipt(ctx)
	res, err := on.ExecContext(wctx, query, args...)
	if _, _, werr := r.wait(ctx, rcpt); err == nil {
		err = werr
	}
	return res, err
}

// queryRowPrimary is queryPrimary for one row. A *sql.Row cannot carry an
// error of flypg's, so a failed wait (the statement committed) is logged.
func (r *Router) queryRowPrimary(ctx context.Context, query string, args []any) *sql.Row {
	wctx, rcpt := forward.WithReceipt(ctx)
	row := r.Forward.QueryRowContext(wctx, query, args...)
	if _, _, werr := r.wait(ctx, rcpt); werr != nil && r.Logger != nil {
		r.Logger.WarnContext(ctx, "flypg: a statement run on the primary committed, but the local replica has not replayed it", "err", werr)
	}
	return row
}

func (r *Router) queryLocal(ctx context.Context, query string, args []any) (*sql.Rows, error) {
	return runLocal(r, ctx, query,
		func(ctx context.Context) (*sql.Rows, error) { return r.Local.QueryContext(ctx, query, args...) },
		func(ctx context.Context) (*sql.Rows, error) { return r.queryPrimary(ctx, r.Forward, query, args) })
}

func (r *Router) execLocal(ctx context.Context, query string, args []any) (sql.Result, error) {
	return runLocal(r, ctx, query,
		func(ctx context.Context) (sql.Result, error) { return r.Local.ExecContext(ctx, query, args...) },
		func(ctx context.Context) (sql.Result, error) { return r.execPrimary(ctx, r.Forward, query, args) })
}

func (r *Router) queryRowLocal(ctx context.Context, query string, args []any) *sql.Row {
	row, _ := runLocal(r, ctx, query,
		func(ctx context.Context) (*sql.Row, error) {
			row := r.Local.QueryRowContext(ctx, query, args...)
			return row, row.Err()
		},
		func(ctx context.Context) (*sql.Row, error) { return r.queryRowPrimary(ctx, query, args), nil })
	return row
}

// Looked is told about each look of the Tracker (lsn.Config.OnLook): a
// look that cannot reach the local replica moves reads to the primary, as
// a read's own failure would. It does not block.
func (r *Router) Looked(l lsn.Look) {
	if l.Err == nil && !l.Status.InRecovery {
		r.promoted()
		return
	}
	if l.Err == nil {
		if h := lsn.LSN(r.avail.highest.Load()); r.MaxLagBytes > 0 && l.Status.InRecovery && h > l.Status.Replayed && uint64(h-l.Status.Replayed) > r.MaxLagBytes {
			r.leave(ReasonLagging, fmt.Errorf("the local replica replayed %s, %d bytes behind %s", l.Status.Replayed, uint64(h-l.Status.Replayed), h))
		}
		return
	}
	if !r.Fallback {
		return
	}
	if errors.Is(l.Err, context.DeadlineExceeded) || classifyLocal(context.Background(), l.Err) == failUnreachable {
		r.leave(ReasonUnreachable, l.Err)
	}
}

// lagTimer notes l as waited for and, with MaxLag, moves reads to the
// primary if the wait for l lasts longer than MaxLag. The returned
// function stops the timer.
func (r *Router) lagTimer(l lsn.LSN) func() {
	for {
		h := r.avail.highest.Load()
		if uint64(l) <= h || r.avail.highest.CompareAndSwap(h, uint64(l)) {
			break
		}
	}
	if r.MaxLag <= 0 {
		return func() {}
	}
	looks := r.Tracker.Stats().Looks
	t := time.AfterFunc(r.MaxLag, func() {
		// Lag is what a look saw: a slow look (a loaded machine) says
		// nothing yet, and an unanswered one is the tracker's to report.
		if r.Tracker.Stats().Looks > looks && r.Tracker.Replayed() < l.Normalize(0) {
			r.leave(ReasonLagging, fmt.Errorf("a write waited %s for the local replica to replay %s; it replayed %s", r.MaxLag, l, r.Tracker.Replayed()))
		}
	})
	return func() { t.Stop() }
}

// beginFallback reports whether a read-only transaction whose local begin
// failed with err begins on the primary instead: the replica could not be
// reached (reads then move to the primary).
func (r *Router) beginFallback(ctx context.Context, err error) bool {
	if err == nil || fly.IsLocal(ctx) || !r.Fallback || classifyLocal(ctx, err) != failUnreachable {
		return false
	}
	r.leave(ReasonUnreachable, err)
	r.reads.fallbacks.Add(1)
	return true
}
