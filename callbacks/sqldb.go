package callbacks

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"

	"gorm.io/gorm"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
)

// OpenDB returns a *sql.DB that routes every statement as the GORM
// callbacks route raw SQL, for code that uses database/sql next to GORM
// (sqlc, hand-written repositories):
//   - QueryContext of a read (IsRead) runs on the local database; any other
//     query, and every ExecContext (an Exec is not used to read), runs on
//     the primary and then waits until the local replica has replayed its
//     commit, unless the context says fly.NoAwait;
//   - a transaction runs on the primary as one forwarded transaction and
//     waits after Commit; a read-only one (other than serializable) and one
//     begun under fly.Local run on the local database;
//   - under fly.Local everything runs on the local database;
//   - a statement that sets session state (forward.SetsSessionState, a
//     session advisory lock) and a forwarded transaction pin a primary
//     connection (forward.Pin) to the database/sql connection: from then
//     on every statement on that connection runs there, reads too, until
//     it goes back to the pool (a held *sql.Conn: until its Close).
//
// So statements on one held *sql.Conn (a db.Connection block) see each
// other's session state as on one direct connection, once it was set;
// statements on the *sql.DB itself are independent units, as in a pool. A
// replication timeout after a write returns a *ReplicationError (the write
// committed); from QueryContext the rows are then not returned.
//
// The *sql.DB holds no connections of its own: each of its connections
// borrows one of the local pool or of the forwarding pool per statement,
// or holds one while pinned (or while running on the local database by
// rule: under fly.Local, or once it was promoted). Close it when done
// with it.
func (r *Router) OpenDB() *sql.DB { return sql.OpenDB(routeConnector{r: r}) }

// OpenOwningDB is OpenDB for what db.DB() returns (Router.Routed): closing
// it closes the local database too, as closing db.DB() closes the pool at
// shutdown with plain GORM.
func (r *Router) OpenOwningDB() *sql.DB { return sql.OpenDB(routeConnector{r: r, owns: true}) }

type routeConnector struct {
	r    *Router
	owns bool // Close closes the local database
}

var _ io.Closer = routeConnector{}

// Close is called by the routed *sql.DB's Close.
func (c routeConnector) Close() error {
	if !c.owns {
		return nil
	}
	local, err := c.r.localDB()
	if err != nil {
		return nil
	}
	return local.Close()
}

func (c routeConnector) Connect(context.Context) (driver.Conn, error) {
	local, err := c.r.localDB()
	if err != nil {
		return nil, fmt.Errorf("flypg: routed database: %w", err)
	}
	return &routeConn{r: c.r, local: local}, nil
}

func (routeConnector) Driver() driver.Driver { return routeDriver{} }

// routeDriver exists because driver.Connector must name a driver; the
// routed database has no DSN form.
type routeDriver struct{}

func (routeDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("flypg: the routed database has no DSN form: use Plugin.DB")
}

// localDB returns the local *sql.DB.
func (r *Router) localDB() (*sql.DB, error) {
	switch l := r.Local.(type) {
	case *sql.DB:
		return l, nil
	case gorm.GetDBConnector:
		return l.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

type routeConn struct {
	r     *Router
	local *sql.DB
	tx    *routeTx
	// pin is a pinned forwarding connection (forward.Pin), taken by the
	// first statement that sets session state or the first forwarded
	// transaction: from then on, until the connection goes back to its
	// pool, every statement runs on it, reads too, so that they see that
	// state, as on one direct connection.
	pin *sql.Conn
	// held is a local connection taken by the first statement that runs
	// on the local database by rule (fly.Local, or a promoted local
	// database), held likewise.
	held *sql.Conn
}

var (
	_ driver.ConnBeginTx        = (*routeConn)(nil)
	_ driver.ExecerContext      = (*routeConn)(nil)
	_ driver.QueryerContext     = (*routeConn)(nil)
	_ driver.ConnPrepareContext = (*routeConn)(nil)
	_ driver.NamedValueChecker  = (*routeConn)(nil)
	_ driver.Pinger             = (*routeConn)(nil)
	_ driver.SessionResetter    = (*routeConn)(nil)
	_ driver.Validator          = (*routeConn)(nil)
)

func (c *routeConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext returns a statement routed anew at each execution.
func (c *routeConn) PrepareContext(_ context.Context, query string) (driver.Stmt, error) {
	return &routeStmt{c: c, query: query}, nil
}

func (c *routeConn) Close() error {
	if c.tx != nil {
		c.tx.tx.Rollback()
		c.tx = nil
	}
	c.release()
	return nil
}

// release gives back what the connection held for its user: database/sql
// asks IsValid as it takes the connection back.
func (c *routeConn) release() {
	if c.pin != nil {
		c.pin.Close()
		c.pin = nil
	}
	if c.held != nil {
		c.held.Close()
		c.held = nil
	}
}

// pinned returns the connection's pinned forwarding connection, taking
// one first if it has none.
func (c *routeConn) pinned(ctx context.Context) (*sql.Conn, error) {
	if c.pin != nil {
		return c.pin, nil
	}
	fc, err := c.r.Forward.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := forward.Pin(fc); err != nil {
		fc.Close()
		return nil, err
	}
	c.pin = fc
	return fc, nil
}

// ruledLocal reports whether statements run on the local database by rule
// rather than by what they are, and returns its held connection.
func (c *routeConn) ruledLocal(ctx context.Context) (bool, *sql.Conn, error) {
	if !fly.IsLocal(ctx) && !c.r.WritesLocally() {
		return false, nil, nil
	}
	if c.held == nil {
		held, err := c.local.Conn(ctx)
		if err != nil {
			return true, nil, err
		}
		c.held = held
	}
	return true, c.held, nil
}

// needsPin reports whether query leaves session state that later
// statements must see: it runs on a pinned connection.
func needsPin(query string) bool {
	return callsIn(query).has(sqlFnSessionLock) || forward.SetsSessionState(query)
}

func (c *routeConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx begins a transaction as the GORM callbacks do, except that one
// for the primary runs on the connection's pinned forwarding connection
// (taken now if need be), so that it sees the session state of the
// statements before it and leaves its own to those after it.
func (c *routeConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if c.tx != nil {
		return nil, errors.New("flypg: transaction already in progress on this connection")
	}
	o := &sql.TxOptions{Isolation: sql.IsolationLevel(opts.Isolation), ReadOnly: opts.ReadOnly}
	if ruled, held, err := c.ruledLocal(ctx); ruled {
		if err != nil {
			return nil, err
		}
		tx, err := held.BeginTx(ctx, o)
		if err != nil {
			return nil, err
		}
		c.tx = &routeTx{c: c, tx: tx, local: true, untouched: true}
		return c.tx, nil
	}
	if local, reason := c.r.beginsLocally(ctx, o); local && c.pin == nil {
		tx, err := c.local.BeginTx(ctx, o)
		if err == nil {
			c.tx = &routeTx{c: c, tx: tx, local: true, untouched: reason != "read only"}
			return c.tx, nil
		}
		if !c.r.beginFallback(ctx, err) {
			return nil, err
		}
	}
	pin, err := c.pinned(ctx)
	if err != nil {
		return nil, err
	}
	tx, ctx, rcpt, err := c.r.beginForwarded(ctx, pin, o)
	if err != nil {
		return nil, err
	}
	c.tx = &routeTx{c: c, tx: tx, ctx: ctx, rcpt: rcpt, readOnly: opts.ReadOnly}
	return c.tx, nil
}

// CheckNamedValue accepts every argument as it is: the pool the statement
// goes to converts it, as it would without flypg.
func (c *routeConn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (c *routeConn) Ping(ctx context.Context) error { return c.local.PingContext(ctx) }

func (c *routeConn) ResetSession(context.Context) error {
	if c.tx != nil {
		return driver.ErrBadConn
	}
	c.release()
	return nil
}

func (c *routeConn) IsValid() bool {
	c.release()
	return c.tx == nil
}

func (c *routeConn) ExecContext(ctx context.Context, query string, nargs []driver.NamedValue) (driver.Result, error) {
	args := values(nargs)
	if c.tx != nil {
		if err := c.tx.check(query); err != nil {
			return nil, err
		}
		return c.tx.tx.ExecContext(ctx, query, args...)
	}
	if ruled, held, err := c.ruledLocal(ctx); ruled {
		if err != nil {
			return nil, err
		}
		return held.ExecContext(ctx, query, args...)
	}
	if c.pin != nil || needsPin(query) {
		pin, err := c.pinned(ctx)
		if err != nil {
			return nil, err
		}
		return c.r.execPrimary(ctx, pin, query, args)
	}
	return c.r.execPrimary(ctx, c.r.Forward, query, args)
}

func (c *routeConn) QueryContext(ctx context.Context, query string, nargs []driver.NamedValue) (driver.Rows, error) {
	args := values(nargs)
	if c.tx != nil {
		if err := c.tx.check(query); err != nil {
			return nil, err
		}
		return wrapRows(c.tx.tx.QueryContext(ctx, query, args...))
	}
	if ruled, held, err := c.ruledLocal(ctx); ruled {
		if err != nil {
			return nil, err
		}
		return wrapRows(held.QueryContext(ctx, query, args...))
	}
	if c.pin != nil || needsPin(query) {
		pin, err := c.pinned(ctx)
		if err != nil {
			return nil, err
		}
		return wrapRows(c.r.queryPrimary(ctx, pin, query, args))
	}
	if IsRead(query) {
		return wrapRows(runLocal(c.r, ctx, query,
			func(ctx context.Context) (*sql.Rows, error) { return c.local.QueryContext(ctx, query, args...) },
			func(ctx context.Context) (*sql.Rows, error) { return c.r.queryPrimary(ctx, c.r.Forward, query, args) }))
	}
	return wrapRows(c.r.queryPrimary(ctx, c.r.Forward, query, args))
}

// awaitReceipt waits for what rcpt recorded, unless ctx says fly.NoAwait.
func (r *Router) awaitReceipt(ctx context.Context, rcpt *forward.Receipt) error {
	_, _, err := r.wait(ctx, rcpt)
	return err
}

func values(nargs []driver.NamedValue) []any {
	args := make([]any, len(nargs))
	for i, a := range nargs {
		if a.Name != "" {
			args[i] = sql.Named(a.Name, a.Value)
		} else {
			args[i] = a.Value
		}
	}
	return args
}

// routeTx is a transaction of the routed database: forwarded, or local.
type routeTx struct {
	c         *routeConn
	tx        *sql.Tx
	local     bool
	untouched bool // begun under fly.Local: nothing in it is checked
	readOnly  bool
	ctx       context.Context // BeginTx's, holding the receipt
	rcpt      *forward.Receipt
}

// check refuses advisory locks in a local transaction: the replica would
// grant them against its own sessions alone.
func (t *routeTx) check(query string) error {
	if t.local && !t.untouched && callsIn(query)&(1<<sqlFnXactLock|1<<sqlFnSessionLock) != 0 {
		return localLockError()
	}
	return nil
}

func (t *routeTx) Commit() error {
	t.c.tx = nil
	if err := t.tx.Commit(); err != nil {
		return err
	}
	if t.local || t.readOnly {
		return nil
	}
	return t.c.r.awaitReceipt(t.ctx, t.rcpt)
}

func (t *routeTx) Rollback() error {
	t.c.tx = nil
	return t.tx.Rollback()
}

type routeStmt struct {
	c     *routeConn
	query string
}

var (
	_ driver.StmtExecContext  = (*routeStmt)(nil)
	_ driver.StmtQueryContext = (*routeStmt)(nil)
)

func (s *routeStmt) Close() error  { return nil }
func (s *routeStmt) NumInput() int { return -1 }

func (s *routeStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), namedValues(args))
}

func (s *routeStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), namedValues(args))
}

func (s *routeStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.c.ExecContext(ctx, s.query, args)
}

func (s *routeStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.c.QueryContext(ctx, s.query, args)
}

func (s *routeStmt) CheckNamedValue(nv *driver.NamedValue) error { return s.c.CheckNamedValue(nv) }

func namedValues(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, a := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return out
}

// sqlRows presents the *sql.Rows of the pool a query went to as the routed
// driver's rows: each value as that pool's driver produced it.
type sqlRows struct {
	rows  *sql.Rows
	cols  []string
	types []*sql.ColumnType
	vals  []any
	ptrs  []any
}

var (
	_ driver.RowsColumnTypeDatabaseTypeName = (*sqlRows)(nil)
	_ driver.RowsColumnTypeScanType         = (*sqlRows)(nil)
	_ driver.RowsColumnTypeNullable         = (*sqlRows)(nil)
	_ driver.RowsColumnTypeLength           = (*sqlRows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*sqlRows)(nil)
)

func wrapRows(rows *sql.Rows, err error) (driver.Rows, error) {
	if err != nil {
		return nil, err
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, err
	}
	types, err := rows.ColumnTypes()
	if err != nil {
		rows.Close()
		return nil, err
	}
	r := &sqlRows{rows: rows, cols: cols, types: types, vals: make([]any, len(cols)), ptrs: make([]any, len(cols))}
	for i := range r.vals {
		r.ptrs[i] = &r.vals[i]
	}
	return r, nil
}

func (r *sqlRows) Columns() []string { return r.cols }
func (r *sqlRows) Close() error      { return r.rows.Close() }

// Next copies the next row's values as the pool's driver returned them
// (scanning into *any converts nothing; byte slices are copied).
func (r *sqlRows) Next(dest []driver.Value) error {
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	if err := r.rows.Scan(r.ptrs...); err != nil {
		return err
	}
	for i, v := range r.vals {
		dest[i] = v
	}
	return nil
}

func (r *sqlRows) ColumnTypeDatabaseTypeName(i int) string { return r.types[i].DatabaseTypeName() }
func (r *sqlRows) ColumnTypeScanType(i int) reflect.Type   { return r.types[i].ScanType() }
func (r *sqlRows) ColumnTypeNullable(i int) (bool, bool)   { return r.types[i].Nullable() }
func (r *sqlRows) ColumnTypeLength(i int) (int64, bool)    { return r.types[i].Length() }
func (r *sqlRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	return r.types[i].DecimalSize()
}
