package callbacks

import (
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"time"
	"unsafe"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
)

// Route is an explicit routing decision for one statement, given with
// db.Clauses(...). package flypg exports the two values as UsePrimary and
// UseLocal.
type Route int

const (
	// RouteDefault leaves the decision to the routing rules.
	RouteDefault Route = iota
	// RoutePrimary sends the statement to the primary. Writes and raw SQL
	// then wait for replication as usual (raw SQL may write through a
	// function); a query built by GORM does not wait.
	RoutePrimary
	// RouteLocal runs the statement on the local database.
	RouteLocal
)

const routeKey = "flypg:route"

// ModifyStatement records the route in the statement (gorm.StatementModifier).
func (r Route) ModifyStatement(stmt *gorm.Statement) { stmt.Settings.Store(routeKey, r) }

// Build adds nothing to the SQL (clause.Expression).
func (Route) Build(clause.Builder) {}

func routeOf(stmt *gorm.Statement) Route {
	if v, ok := stmt.Settings.Load(routeKey); ok {
		return v.(Route)
	}
	return RouteDefault
}

type state struct {
	rcpt  *forward.Receipt // nil for forwarded reads: nothing to wait for
	op    string
	start time.Time
	end   func(error) // Router.StartStatement's, or nil

	// The chain's error just before GORM's commit or rollback: the one
	// that decided it, before a rollback's own error joins it.
	pending  error
	recorded bool
}

const stateKey = "flypg:state"

func stateOf(stmt *gorm.Statement) *state {
	if v, ok := stmt.Settings.Load(stateKey); ok {
		return v.(*state)
	}
	return nil
}

// Register installs the router in db: its connection pool and its
// callbacks. db must be a replica-region *gorm.DB opened on the local
// database.
func (r *Router) Register(db *gorm.DB) error {
	if r.Local == nil || r.Forward == nil || r.Tracker == nil {
		return errors.New("flypg: callbacks: Router needs Local, Forward and Tracker")
	}
	r.fwdPool = &forwardPool{DB: r.Forward, r: r}
	r.avail.init()
	cb := db.Callback()
	regs := []struct {
		name string
		err  error
	}{
		{"create route", cb.Create().Before("*").Register("flypg:route", r.route("create"))},
		{"update route", cb.Update().Before("*").Register("flypg:route", r.route("update"))},
		{"delete route", cb.Delete().Before("*").Register("flypg:route", r.route("delete"))},
		{"query route", cb.Query().Before("*").Register("flypg:route", r.route("query"))},
		{"row route", cb.Row().Before("*").Register("flypg:route", r.route("row"))},
		{"raw route", cb.Raw().Before("*").Register("flypg:route", r.route("raw"))},
		{"create last", cb.Create().Before("gorm:create").Register("flypg:last_statement", r.markLast("create"))},
		{"update last", cb.Update().Before("gorm:update").Register("flypg:last_statement", r.markLast("update"))},
		{"delete last", cb.Delete().Before("gorm:delete").Register("flypg:last_statement", r.markLast("delete"))},
		{"create outcome", cb.Create().Before("gorm:commit_or_rollback_transaction").Register("flypg:outcome", recordOutcome)},
		{"update outcome", cb.Update().Before("gorm:commit_or_rollback_transaction").Register("flypg:outcome", recordOutcome)},
		{"delete outcome", cb.Delete().Before("gorm:commit_or_rollback_transaction").Register("flypg:outcome", recordOutcome)},
		{"create await", cb.Create().After("*").Register("flypg:await", r.await)},
		{"update await", cb.Update().After("*").Register("flypg:await", r.await)},
		{"delete await", cb.Delete().After("*").Register("flypg:await", r.await)},
		{"query await", cb.Query().After("*").Register("flypg:await", r.await)},
		{"row await", cb.Row().After("*").Register("flypg:await", r.await)},
		{"raw await", cb.Raw().After("*").Register("flypg:await", r.await)},
	}
	for _, reg := range regs {
		if reg.err != nil {
			return fmt.Errorf("flypg: register %s callback: %w", reg.name, reg.err)
		}
	}
	pool := &Pool{r: r}
	db.Config.ConnPool = pool
	db.Statement.ConnPool = pool
	return nil
}

// route is the first callback of every chain: it points the statement at
// the forwarding pool when it must run on the primary, and refuses what
// cannot run where the statement's connection is.
func (r *Router) route(op string) func(*gorm.DB) {
	return func(db *gorm.DB) {
		stmt := db.Statement
		if db.Error != nil || fly.IsLocal(stmt.Context) {
			return
		}
		write, primary := decide(op, stmt)
		if primary && r.WritesLocally() {
			write, primary = false, false // the local database is the primary now
		}
		switch conn := connOf(stmt.ConnPool).(type) {
		case *Tx:
			return // a forwarded transaction: everything in it runs on the primary
		case *localTx:
			// A read-only transaction on the local replica: PostgreSQL
			// refuses its writes as the primary would, but it would grant
			// advisory locks against the replica's sessions alone.
			if !conn.untouched && locks(stmt) != 0 {
				db.AddError(localLockError())
			}
			return
		case gorm.TxCommitter, *sql.Conn:
			if r.isRouted(conn) {
				// A db.Connection block, or a transaction begun in one, on
				// a connection of the routed database (db.DB()): it routes
				// each statement itself, on one pinned primary connection
				// once session state or a transaction needs it.
				return
			}
			// A connection or transaction of the local replica's own pool
			// (taken from it directly): writes cannot run there.
			if primary {
				db.AddError(fmt.Errorf("%w (%s)", ErrPinnedConnection, op))
			}
			return
		}
		if !primary {
			var why string
			if primary, why = r.readRoute(stmt.Context); !primary {
				r.debug("flypg: route local", "op", op, "table", stmt.Table)
				// The local pool's runLocal need not decide again (a
				// session's wait is done, and counted, once).
				stmt.Context = routedLocal(stmt.Context)
				return
			}
			r.debug("flypg: read on the primary", "op", op, "table", stmt.Table, "reason", why)
		}
		if locks(stmt).has(sqlFnSessionLock) {
			db.AddError(sessionLockError())
			return
		}
		st := &state{op: op, start: time.Now()}
		if r.StartStatement != nil {
			stmt.Context, st.end = r.StartStatement(stmt.Context, op, stmt.Table, write)
		}
		if write {
			ctx, rcpt := forward.WithReceipt(stmt.Context)
			stmt.Context = ctx
			st.rcpt = rcpt
		}
		stmt.ConnPool = r.fwdPool
		stmt.Settings.Store(stateKey, st)
		r.debug("flypg: route primary", "op", op, "table", stmt.Table, "write", write)
	}
}

// connOf returns the connection pool under GORM's prepared-statement
// wrapper for transactions.
// isRouted reports whether conn, a connection or transaction GORM holds,
// belongs to the routed database (Router.Routed).
func (r *Router) isRouted(conn gorm.ConnPool) bool {
	if r.Routed == nil {
		return false
	}
	switch c := conn.(type) {
	case *sql.Conn:
		routed := false
		c.Raw(func(dc any) error {
			_, routed = dc.(*routeConn)
			return nil
		})
		return routed
	case *sql.Tx:
		// database/sql keeps a transaction's database unexported; GORM's
		// own db.DB() reads it the same way.
		return reflect.ValueOf(c).Elem().FieldByName("db").UnsafePointer() == unsafe.Pointer(r.Routed)
	}
	return false
}

func connOf(pool gorm.ConnPool) gorm.ConnPool {
	if p, ok := pool.(*gorm.PreparedStmtTX); ok && p.Tx != nil {
		return p.Tx
	}
	return pool
}

// decide returns whether the statement writes and whether it runs on the
// primary.
func decide(op string, stmt *gorm.Statement) (write, primary bool) {
	switch routeOf(stmt) {
	case RouteLocal:
		return false, false
	case RoutePrimary:
		// Raw SQL sent to the primary by hand may well write through a
		// function (SELECT my_fn()): wait for it like any write. A query
		// GORM builds only reads: no wait.
		write = op == "create" || op == "update" || op == "delete" || op == "raw" || stmt.SQL.Len() > 0
		return write, true
	}
	switch op {
	case "create", "update", "delete", "raw":
		// db.Exec is not used to read: even an Exec of a SELECT runs for
		// its effect (SELECT setval(...), SELECT my_write_fn()).
		return true, true
	}
	if stmt.SQL.Len() > 0 {
		// Raw SQL, or a statement GORM built already.
		read := IsRead(stmt.SQL.String())
		return !read, !read
	}
	if builtCalls(stmt) != 0 {
		// A built query selecting nextval(...) or the like: it may write.
		return true, true
	}
	if _, locks := stmt.Clauses["FOR"]; locks {
		// SELECT ... FOR UPDATE/SHARE takes row locks, which a hot
		// standby refuses.
		return false, true
	}
	return false, false
}

// locks returns the advisory lock functions the statement calls.
func locks(stmt *gorm.Statement) sqlCalls {
	var calls sqlCalls
	if stmt.SQL.Len() > 0 {
		calls = callsIn(stmt.SQL.String())
	} else {
		calls = builtCalls(stmt)
	}
	return calls & (1<<sqlFnXactLock | 1<<sqlFnSessionLock)
}

// builtCalls returns the listed functions that a query GORM has yet to
// build calls in its SELECT list or WHERE conditions.
func builtCalls(stmt *gorm.Statement) sqlCalls {
	var calls sqlCalls
	for _, s := range stmt.Selects {
		calls |= callsIn(s)
	}
	for _, name := range []string{"SELECT", "WHERE"} {
		if c, ok := stmt.Clauses[name]; ok {
			calls |= exprCalls(c.Expression)
		}
	}
	return calls
}

func exprCalls(e clause.Expression) sqlCalls {
	switch x := e.(type) {
	case clause.Expr:
		return callsIn(x.SQL)
	case clause.NamedExpr:
		return callsIn(x.SQL)
	case clause.Select:
		return exprCalls(x.Expression)
	case clause.Where:
		var calls sqlCalls
		for _, w := range x.Exprs {
			calls |= exprCalls(w)
		}
		return calls
	case clause.AndConditions:
		var calls sqlCalls
		for _, w := range x.Exprs {
			calls |= exprCalls(w)
		}
		return calls
	case clause.OrConditions:
		var calls sqlCalls
		for _, w := range x.Exprs {
			calls |= exprCalls(w)
		}
		return calls
	}
	return 0
}

// markLast runs just before GORM's own statement callback. When that
// statement is the last of GORM's implicit transaction (nothing that can
// fail or write runs after it but the commit), the driver sends it
// together with COMMIT.
func (r *Router) markLast(op string) func(*gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil {
			return
		}
		if _, ok := db.InstanceGet("gorm:started_transaction"); !ok {
			return // not GORM's implicit transaction
		}
		if stateOf(db.Statement) == nil {
			return // not a statement flypg forwarded
		}
		if !r.commitMayTravel(op, db) {
			return
		}
		db.Statement.Context = forward.LastStatement(db.Statement.Context)
	}
}

// recordOutcome runs just before GORM commits or rolls back its implicit
// transaction and keeps the error that decides which.
func recordOutcome(db *gorm.DB) {
	if st := stateOf(db.Statement); st != nil {
		st.pending, st.recorded = db.Error, true
	}
}

// await is the last callback of every chain (after GORM's COMMIT): it waits
// until the local replica has replayed the statement's commit. A write that
// committed is never reported as failed: if GORM reported an error after
// it committed, the error becomes a CommittedError.
func (r *Router) await(db *gorm.DB) {
	v, ok := db.Statement.Settings.LoadAndDelete(stateKey)
	if !ok {
		return
	}
	st := v.(*state)
	if st.end != nil {
		defer func() { st.end(db.Error) }()
	}
	r.forwardFailed(db.Error)
	if st.rcpt == nil {
		r.Sessions.NoteRoundTrip(time.Since(st.start), 1)
		return
	}
	if db.Error != nil && st.rcpt.Commits() > 0 && !saysCommitted(db.Error) {
		cause := db.Error
		if st.recorded && st.pending != nil {
			cause = st.pending // without the failed rollback's own error
		}
		db.Error = &CommittedError{LSN: st.rcpt.LSN(), Err: cause}
	}
	forwarded := time.Since(st.start)
	r.Sessions.NoteRoundTrip(forwarded, st.rcpt.RPCs())
	l, waited, err := r.wait(db.Statement.Context, st.rcpt)
	if err != nil {
		db.AddError(err)
	}
	r.debug("flypg: forwarded write", "op", st.op, "lsn", l, "forward", forwarded, "wait", waited, "rpcs", st.rcpt.RPCs(), "err", err)
	if r.Observe != nil {
		r.Observe(db.Statement.Context, Event{Op: st.op, Table: db.Statement.Table, LSN: l, Forward: forwarded, Wait: waited, Err: firstErr(err, db.Error), NoAwait: fly.IsNoAwait(db.Statement.Context), RPCs: st.rcpt.RPCs(), Duration: time.Since(st.start)})
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
