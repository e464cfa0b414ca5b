package callbacks

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/lsn"
)

// Router routes a replica-region *gorm.DB: it owns the callbacks and the
// connection pool that Register installs.
type Router struct {
	// Local is the database's own pool (the local replica).
	Local gorm.ConnPool
	// Forward is the forwarding pool: statements on it run on the primary.
	Forward *sql.DB
	// Tracker waits for the local replica to replay commit LSNs.
	Tracker *lsn.Tracker
	// Logger receives each routing decision at debug level. Nil: silent.
	Logger *slog.Logger
	// Observe, if set, is told about every forwarded write after its wait,
	// with the write's context (which carries the caller's request): for
	// metrics and per-request reports. It must not block.
	Observe func(context.Context, Event)
	// StartStatement, if set, is called for every statement routed to the
	// primary, before it is sent: op and table name it, write says whether
	// it writes. The context it returns becomes the statement's (a tracing
	// span, say, then parent of the gRPC call); end, if not nil, is called
	// with the statement's outcome once it and its wait have ended.
	StartStatement func(ctx context.Context, op, table string, write bool) (_ context.Context, end func(error))
	// StartWait, if set, brackets every wait for replication in the same
	// way.
	StartWait func(ctx context.Context, l lsn.LSN) (_ context.Context, end func(error))
	// Sessions, if set, makes reads under a session (WithSession) wait for
	// its marks and writes advance them; nil: sessions are ignored.
	Sessions *Sessions

	// Fallback runs statements the routing rules leave on the local
	// replica on the primary while the replica cannot be reached (a
	// statement or a tracker look failed to reach it), and until it has
	// replayed everything this node wrote or read on the primary
	// meanwhile; writes stop waiting for it. A probe looks at the replica
	// every ProbeInterval (default DefaultProbeInterval) meanwhile.
	Fallback      bool
	ProbeInterval time.Duration
	// Source is what the probe asks about the local replica; nil: a
	// lsn.ReplaySource of the Router's own.
	Source lsn.Source
	// SafetyNet runs once on the primary a statement outside a
	// transaction that the local replica refused as read-only (SQLSTATE
	// 25006, or 0A000 for temporary and unlogged relations), and logs its
	// shape once at warning level.
	SafetyNet bool
	// MaxLag, if positive, bounds how far behind the local replica may
	// fall: a write that waits longer than MaxLag for it moves reads to
	// the primary (ReasonLagging), as does a tracker look that finds it
	// more than MaxLagBytes (if positive) behind the newest LSN a write
	// waited for. Writes stop waiting; reads return as after an outage.
	MaxLag      time.Duration
	MaxLagBytes uint64
	// FollowPromotion runs writes and transactions on the local database
	// once it is seen promoted (out of recovery) instead of forwarding
	// them; see WritesLocally.
	FollowPromotion bool
	// OnMode, if set, is told when reads move between the local replica
	// and the primary. It must not block.
	OnMode func(Mode)

	// Routed, if set, is a routed database (OpenDB) that db.DB() returns:
	// database/sql code gets GORM's routing, and a db.Connection block
	// takes one of its connections, which runs the block's statements on
	// one pinned primary connection once session state or a transaction
	// needs it. Nil: db.DB() returns the local *sql.DB.
	Routed *sql.DB

	chains  chainCache   // what GORM's callback chains allow after a statement
	fwdPool *forwardPool // the pool of statements routed to the primary
	avail   availability // where reads run now
	reads   readCounters
	shapes  shapes // statement shapes the safety net logged

	srcOnce sync.Once
	src     lsn.Source
	ownSrc  *lsn.ReplaySource // src, when the Router made it
}

// Event describes one forwarded write, for Router.Observe.
type Event struct {
	Op       string        // "create", "update", "delete", "raw", "row", "query", "commit", "call"
	Table    string        // the statement's table, when GORM knows it
	Function string        // the registered function, for "call"
	LSN      lsn.LSN       // commit LSN, 0 if nothing committed
	Forward  time.Duration // time in the forwarded statement (or transaction)
	Wait     time.Duration // time waiting for the replica
	Err      error         // the statement's or the wait's error
	NoAwait  bool          // the caller opted out of waiting
	RPCs     int           // round trips to the executor
	Duration time.Duration // total
}

// ReplicationError reports a write that committed on the primary but that
// the local replica had not replayed when the wait ended. The write is
// durable; only read-your-writes on this replica is not guaranteed yet.
type ReplicationError struct {
	LSN lsn.LSN // the commit LSN waited for
	Err error   // the tracker's *lsn.WaitError
}

// ErrReplicationTimeout matches a ReplicationError whose wait ran out of
// time (the tracker's timeout or the caller's deadline).
var ErrReplicationTimeout = errors.New("flypg: replication wait timed out")

func (e *ReplicationError) Error() string {
	return fmt.Sprintf("flypg: the write committed on the primary at %s, but the local replica has not replayed it: %v", e.LSN, e.Err)
}

func (e *ReplicationError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrReplicationTimeout) true for waits that ran out
// of time.
func (e *ReplicationError) Is(target error) bool {
	return target == ErrReplicationTimeout &&
		(errors.Is(e.Err, lsn.ErrTimeout) || errors.Is(e.Err, context.DeadlineExceeded))
}

// Committed reports that the write is on the primary: always true.
func (e *ReplicationError) Committed() bool { return true }

// wait waits for rcpt's commit LSN unless ctx says fly.NoAwait.
func (r *Router) wait(ctx context.Context, rcpt *forward.Receipt) (lsn.LSN, time.Duration, error) {
	l := rcpt.LSN()
	waited, err := r.Wait(ctx, l)
	return l, waited, err
}

// Wait waits until the local replica has replayed l, unless l is zero or
// ctx says fly.NoAwait. It returns how long it waited and a
// *ReplicationError if the wait failed.
func (r *Router) Wait(ctx context.Context, l lsn.LSN) (time.Duration, error) {
	r.Sessions.advance(ctx, l) // also under fly.NoAwait: the next read waits instead
	if l == 0 || fly.IsNoAwait(ctx) || r.avail.owe(l) {
		return 0, nil // nothing to wait for, or reads run on the primary
	}
	var end func(error)
	if r.StartWait != nil {
		ctx, end = r.StartWait(ctx, l)
	}
	start := time.Now()
	wctx, release := r.avail.waitContext(ctx)
	stopLag := r.lagTimer(l)
	err := r.Tracker.Wait(wctx, l)
	stopLag()
	release()
	waited := time.Since(start)
	if err != nil && ctx.Err() == nil && r.avail.owe(l) {
		err = nil // reads moved to the primary meanwhile
	}
	if err != nil {
		err = &ReplicationError{LSN: l, Err: err}
	}
	if end != nil {
		end(err)
	}
	return waited, err
}

func (r *Router) debug(msg string, args ...any) {
	if r.Logger != nil {
		r.Logger.Debug(msg, args...)
	}
}

// Pool is the connection pool Register installs in the *gorm.DB. Statements
// run on the local replica, except where a routing callback chose the
// forwarding pool. Transactions are forwarded to the primary (one stream,
// one primary connection), except read-only ones and those begun under
// fly.Local, which stay local.
type Pool struct {
	r *Router
}

var (
	_ gorm.ConnPool         = (*Pool)(nil)
	_ gorm.ConnPoolBeginner = (*Pool)(nil)
	_ gorm.GetDBConnector   = (*Pool)(nil)
)

func (p *Pool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return p.r.Local.PrepareContext(ctx, query)
}

// ExecContext, QueryContext and QueryRowContext run a statement the
// routing callbacks left on the local replica (see Router.Fallback and
// Router.SafetyNet for when it runs on the primary instead).
func (p *Pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return p.r.execLocal(ctx, query, args)
}

func (p *Pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return p.r.queryLocal(ctx, query, args)
}

func (p *Pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return p.r.queryRowLocal(ctx, query, args)
}

// GetDBConn returns what db.DB() returns, and so what db.Connection takes
// its connection from: the routed database (Router.Routed) when set,
// else the local *sql.DB.
func (p *Pool) GetDBConn() (*sql.DB, error) {
	if p.r.Routed != nil {
		return p.r.Routed, nil
	}
	return p.r.localDB()
}

// BeginTx begins a transaction: forwarded to the primary, or local when
// ctx says fly.Local or opts is read-only. A read-only transaction at the
// serializable level, which a hot standby refuses, runs on the primary.
func (p *Pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	if local, reason := p.r.beginsLocally(ctx, opts); local {
		p.r.debug("flypg: transaction stays local", "reason", reason)
		var (
			tx  gorm.ConnPool
			err error
		)
		switch b := p.r.Local.(type) {
		case gorm.TxBeginner:
			tx, err = b.BeginTx(ctx, opts)
		case gorm.ConnPoolBeginner:
			tx, err = b.BeginTx(ctx, opts)
		default:
			return nil, gorm.ErrInvalidTransaction
		}
		if t, ok := tx.(gorm.Tx); ok && err == nil {
			return &localTx{Tx: t, untouched: reason != "read only"}, nil
		}
		if !p.r.beginFallback(ctx, err) {
			return tx, err
		}
	}
	tx, ctx, rcpt, err := p.r.beginForwarded(ctx, p.r.Forward, opts)
	if err != nil {
		return nil, err
	}
	p.r.debug("flypg: transaction forwarded to the primary")
	return &Tx{Tx: tx, r: p.r, ctx: ctx, rcpt: rcpt, start: time.Now(), readOnly: opts != nil && opts.ReadOnly}, nil
}

// beginsLocally reports whether a transaction stays on the local database,
// and why. A read-only one runs on the primary while reads do (readRoute).
func (r *Router) beginsLocally(ctx context.Context, opts *sql.TxOptions) (bool, string) {
	switch {
	case fly.IsLocal(ctx):
		return true, "fly.Local"
	case r.WritesLocally():
		return true, reasonLocalPrimary
	case opts != nil && opts.ReadOnly && opts.Isolation != sql.LevelSerializable:
		if primary, _ := r.readRoute(ctx); primary {
			return false, ""
		}
		return true, "read only"
	}
	return false, ""
}

// forwardPool is the connection pool of a statement the routing callback
// sends to the primary: the forwarding pool, whose transactions (GORM's
// implicit one around a write) are *Tx values, so that statements in them —
// hooks, associations, callbacks — are known to run on the primary. Its
// statements run on the embedded forwarding *sql.DB.
type forwardPool struct {
	*sql.DB
	r *Router
}

var (
	_ gorm.ConnPool         = (*forwardPool)(nil)
	_ gorm.ConnPoolBeginner = (*forwardPool)(nil)
	_ gorm.GetDBConnector   = (*forwardPool)(nil)
)

// BeginTx begins GORM's implicit transaction on the primary. Its commit
// does not wait: the await callback does, after the chain.
func (p *forwardPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, ctx, rcpt, err := p.r.beginForwarded(ctx, p.r.Forward, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{Tx: tx, r: p.r, ctx: ctx, rcpt: rcpt, start: time.Now(), implicit: true}, nil
}

// GetDBConn returns the forwarding pool.
func (p *forwardPool) GetDBConn() (*sql.DB, error) { return p.DB, nil }

// beginForwarded begins a transaction on the forwarding pool, with a
// receipt in its context (ctx's own, if it has one) for the commit LSN.
func (r *Router) beginForwarded(ctx context.Context, on primaryConn, opts *sql.TxOptions) (*sql.Tx, context.Context, *forward.Receipt, error) {
	rcpt := forward.ReceiptFrom(ctx)
	if rcpt == nil {
		ctx, rcpt = forward.WithReceipt(ctx)
	}
	tx, err := on.BeginTx(ctx, opts)
	r.forwardFailed(err)
	return tx, ctx, rcpt, err
}

// localTx is a transaction flypg began on the local database: read-only, or
// under fly.Local (untouched: nothing in it is checked). The routing
// callback tells it from a transaction begun on a db.Connection block's
// local connection, whose writes cannot run.
type localTx struct {
	gorm.Tx
	untouched bool
}

// GetDBConn returns the local *sql.DB, as the wrapped transaction would.
func (t *localTx) GetDBConn() (*sql.DB, error) {
	if g, ok := t.Tx.(gorm.GetDBConnector); ok {
		return g.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// Tx is a transaction forwarded to the primary. Commit waits, once, for the
// local replica to replay it (unless its context says fly.NoAwait, or it is
// read-only); a replication timeout after a successful commit returns a
// *ReplicationError.
type Tx struct {
	*sql.Tx
	r        *Router
	ctx      context.Context
	rcpt     *forward.Receipt
	start    time.Time
	readOnly bool
	implicit bool // GORM's implicit transaction: the await callback waits
}

var _ gorm.Tx = (*Tx)(nil)

// Commit commits on the primary, then waits for replication.
func (t *Tx) Commit() error {
	if err := t.Tx.Commit(); err != nil {
		t.r.forwardFailed(err)
		return err
	}
	if t.readOnly || t.implicit {
		return nil // nothing written, or the await callback waits
	}
	forwarded := time.Since(t.start)
	l, waited, err := t.r.wait(t.ctx, t.rcpt)
	if t.r.Observe != nil {
		t.r.Observe(t.ctx, Event{Op: "commit", LSN: l, Forward: forwarded, Wait: waited, Err: err, NoAwait: fly.IsNoAwait(t.ctx), RPCs: t.rcpt.RPCs(), Duration: time.Since(t.start)})
	}
	return err
}

// StmtContext returns stmt for use in the transaction. A statement that GORM
// prepared on the local database (a PrepareStmt session, outside a
// transaction) is prepared again from its SQL on the transaction, which
// costs nothing: the forwarding driver sends the SQL with each execution.
func (t *Tx) StmtContext(ctx context.Context, stmt *sql.Stmt) *sql.Stmt {
	if q, ok := stmtQuery(stmt); ok {
		if s, err := t.Tx.PrepareContext(ctx, q); err == nil {
			return s
		}
	}
	return t.Tx.StmtContext(ctx, stmt)
}

// Stmt is StmtContext with the background context.
func (t *Tx) Stmt(stmt *sql.Stmt) *sql.Stmt { return t.StmtContext(context.Background(), stmt) }

// stmtQuery returns the SQL a *sql.Stmt was prepared from. database/sql
// keeps it in an unexported field and offers no accessor, so it is read by
// reflection (read only); if the field ever disappears, the answer is "not
// known" and the transaction falls back to database/sql's own Stmt.
func stmtQuery(stmt *sql.Stmt) (string, bool) {
	if stmt == nil {
		return "", false
	}
	f := reflect.ValueOf(stmt).Elem().FieldByName("query")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// GetDBConn returns the forwarding pool the transaction belongs to.
func (t *Tx) GetDBConn() (*sql.DB, error) { return t.r.Forward, nil }
