package forward

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
)

// Connector returns a driver.Connector whose connections forward every
// newStatement to the executor. Open a pool with sql.OpenDB(c.Connector()),
// or use OpenDB. The connections are cheap: they share the client's one
// HTTP/2 connection, and a transaction holds a gRPC stream only while it
// runs.
func (c *Client) Connector() driver.Connector { return connector{c} }

// OpenDB returns a *sql.DB on c.Connector().
func (c *Client) OpenDB() *sql.DB { return sql.OpenDB(c.Connector()) }

type connector struct{ c *Client }

func (cn connector) Connect(context.Context) (driver.Conn, error) {
	return &conn{c: cn.c, types: pgtype.NewMap()}, nil
}

func (cn connector) Driver() driver.Driver { return driverOnly{} }

// driverOnly exists because driver.Connector must name a driver; flypg's
// driver has no DSN form, so Open explains how to use it.
type driverOnly struct{}

func (driverOnly) Open(string) (driver.Conn, error) {
	return nil, errors.New("forward: the forwarding driver has no DSN form: use sql.OpenDB(client.Connector())")
}

// conn is one database/sql connection. Outside a transaction each statement
// is its own forwarded unit (one round trip, committed on the primary);
// inside one, statements travel on the transaction's stream.
type conn struct {
	c     *Client
	types *pgtype.Map // decodes results, like a pgx connection's type map
	tx    *clientTx
	pin   *pinLink // set by Pin: everything runs on one primary connection
	bad   bool
}

var (
	_ driver.ConnBeginTx                    = (*conn)(nil)
	_ driver.ExecerContext                  = (*conn)(nil)
	_ driver.QueryerContext                 = (*conn)(nil)
	_ driver.ConnPrepareContext             = (*conn)(nil)
	_ driver.Pinger                         = (*conn)(nil)
	_ driver.NamedValueChecker              = (*conn)(nil)
	_ driver.SessionResetter                = (*conn)(nil)
	_ driver.Validator                      = (*conn)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*wire.Rows)(nil)
)

func (cn *conn) Prepare(query string) (driver.Stmt, error) {
	return cn.PrepareContext(context.Background(), query)
}

// PrepareContext returns a statement that forwards its SQL on each
// execution; nothing is prepared on the primary ahead of time (the executor's
// pgx connections cache prepared statements themselves).
func (cn *conn) PrepareContext(_ context.Context, query string) (driver.Stmt, error) {
	return &stmt{cn: cn, query: query}, nil
}

func (cn *conn) Close() error {
	if cn.tx != nil {
		cn.tx.abort()
		cn.tx = nil
	}
	cn.unpin()
	return nil
}

func (cn *conn) Begin() (driver.Tx, error) {
	return cn.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx starts a transaction lazily: nothing is sent until the first
// statement, which travels with BEGIN. ctx is kept for the whole
// transaction: its Receipt receives the commit LSN.
func (cn *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if cn.tx != nil {
		return nil, errors.New("forward: transaction already in progress on this connection")
	}
	iso, err := isolationName(sql.IsolationLevel(opts.Isolation))
	if err != nil {
		return nil, err
	}
	var link txLink = &txStream{c: cn.c}
	if cn.pin != nil {
		link = cn.pin
	}
	cn.tx = &clientTx{c: cn.c, link: link, ctx: ctx, isolation: iso, readOnly: opts.ReadOnly, id: newID(), done: func() { cn.tx = nil }}
	return cn.tx, nil
}

func isolationName(l sql.IsolationLevel) (string, error) {
	switch l {
	case sql.LevelDefault:
		return "", nil
	case sql.LevelReadUncommitted:
		return "read uncommitted", nil
	case sql.LevelReadCommitted:
		return "read committed", nil
	case sql.LevelRepeatableRead, sql.LevelSnapshot:
		return "repeatable read", nil
	case sql.LevelSerializable:
		return "serializable", nil
	}
	return "", fmt.Errorf("forward: unsupported isolation level %v", l)
}

// CheckNamedValue encodes each argument for the wire as database/sql hands
// it over, before its default conversions: like pgx's stdlib, the driver
// accepts every type pgx can encode. pgx's query options pass unchanged, for
// newStatement to apply.
func (cn *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if isQueryOption(nv.Value) {
		return nil
	}
	v, err := wire.EncodeArg(nv.Value)
	if err != nil {
		return err
	}
	nv.Value = v
	return nil
}

func (cn *conn) ResetSession(context.Context) error {
	if cn.bad || cn.tx != nil {
		return driver.ErrBadConn
	}
	cn.unpin()
	return nil
}

// IsValid is called as database/sql takes the connection back: a pin ends
// there, so that its primary connection serves nobody else.
func (cn *conn) IsValid() bool {
	cn.unpin()
	return !cn.bad && cn.tx == nil
}

func (cn *conn) unpin() {
	if cn.pin != nil {
		cn.pin.end()
		cn.pin = nil
	}
}

func (cn *conn) Ping(ctx context.Context) error { return cn.c.Ping(ctx) }

// isQueryOption reports whether v is one of the query options pgx accepts
// in front of a query's arguments (pgx.Conn.Query and Exec).
func isQueryOption(v any) bool {
	switch v.(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
		return true
	}
	return false
}

// queryOptions applies the pgx query options leading args, as pgx's stdlib
// does by passing them on to pgx: a QueryRewriter (such as pgx.NamedArgs)
// rewrites the query and its arguments, here in the client, without a
// connection (NamedArgs needs none). The execution mode and result formats
// say how pgx would talk to the server; the executor chooses that itself,
// and results decode the same in either format, so they are dropped. GORM's
// postgres migrator passes pgx.QueryExecModeSimpleProtocol this way.
func queryOptions(ctx context.Context, query string, args []driver.NamedValue) (string, []driver.NamedValue, error) {
	var rewriter pgx.QueryRewriter
	for len(args) > 0 && isQueryOption(args[0].Value) {
		if r, ok := args[0].Value.(pgx.QueryRewriter); ok {
			rewriter = r
		}
		args = args[1:]
	}
	if rewriter == nil {
		return query, args, nil
	}
	in := make([]any, len(args))
	for i, a := range args {
		in[i] = a.Value
	}
	query, out, err := rewriter.RewriteQuery(ctx, nil, query, in)
	if err != nil {
		return "", nil, fmt.Errorf("forward: rewrite query: %w", err)
	}
	args = make([]driver.NamedValue, len(out))
	for i, v := range out {
		args[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return query, args, nil
}

// newStatement builds the protocol form of a statement. SQL or text that is
// not valid UTF-8 fails here, before anything is sent, with PostgreSQL's
// own error for it (a *pgconn.PgError, SQLSTATE 22021).
func newStatement(ctx context.Context, query string, args []driver.NamedValue) (*forwardpb.Statement, error) {
	query, args, err := queryOptions(ctx, query, args)
	if err != nil {
		return nil, err
	}
	if !utf8.ValidString(query) {
		return nil, wire.InvalidText(query)
	}
	st := &forwardpb.Statement{Sql: query}
	if len(args) > 0 {
		st.Args = make([]*forwardpb.Value, len(args))
		for i, a := range args {
			v, ok := a.Value.(*forwardpb.Value)
			if !ok {
				// Values that did not pass CheckNamedValue (driver.Stmt
				// callers outside database/sql).
				var err error
				if v, err = wire.EncodeArg(a.Value); err != nil {
					return nil, err
				}
			}
			st.Args[i] = v
		}
	}
	return st, nil
}

func (cn *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	a, err := cn.run(ctx, "exec", query, args, true)
	if err != nil {
		return nil, err
	}
	if a.endErr != nil {
		// A lone statement whose COMMIT failed: pgx's Exec reports the
		// error alone.
		return nil, a.endErr
	}
	return driver.RowsAffected(a.res.GetRowsAffected()), nil
}

func (cn *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	a, err := cn.run(ctx, "query", query, args, false)
	if err != nil {
		return nil, err
	}
	return a.rows(cn.types)
}

func (cn *conn) run(ctx context.Context, op, query string, args []driver.NamedValue, exec bool) (*answer, error) {
	st, err := newStatement(ctx, query, args)
	if err != nil {
		return nil, err
	}
	// A query's result may arrive in parts; an exec's rows are dropped.
	st.Exec, st.Parts = exec, !exec
	switch {
	case cn.tx != nil:
		return cn.tx.statement(ctx, st)
	case cn.pin != nil:
		return cn.pin.run(ctx, st)
	}
	return cn.c.exec(ctx, op, st)
}

// exec forwards one statement as its own unit and records its commit in
// ctx's Receipt.
func (c *Client) exec(ctx context.Context, op string, st *forwardpb.Statement) (*answer, error) {
	id, rcpt := newID(), ReceiptFrom(ctx)
	resp, err := c.execUnit(ctx, op, st, id, rcpt)
	return c.lone(ctx, op, id, resp, err, rcpt, loneEnd)
}

// execUnit forwards one statement as the unit id. It returns the
// executor's answer (see Client.lone), or the failure to get one, after
// recording in rcpt a commit that a failure reports.
func (c *Client) execUnit(ctx context.Context, op string, st *forwardpb.Statement, id []byte, rcpt *Receipt) (*forwardpb.ExecResponse, error) {
	ctx, cancel := c.unitContext(ctx)
	defer cancel()
	var resp *forwardpb.ExecResponse
	err := c.do(ctx, op, id, rcpt, func(ctx context.Context, u *forwardpb.Unit, md *metadata.MD) (connID, error) {
		req := &forwardpb.ExecRequest{Unit: u, Statement: st}
		size, err := c.sendSize(req)
		if err != nil {
			return "", err
		}
		if s := c.session(ctx); s != nil && size <= maxSessionMessage {
			resp, err = s.exec(ctx, req, md)
			return s.conn, err
		}
		// Without a session, or for a statement too large for one (a
		// message over the executor's receive limit would end the whole
		// session; a call that size is refused alone, saying nothing ran).
		var p peer.Peer
		resp, err = c.api.Exec(ctx, req, grpc.Trailer(md), grpc.Peer(&p))
		if err == nil {
			c.inst.note(connOf(&p), resp.GetInstance())
		}
		return connOf(&p), err
	})
	var committed *CommittedError
	if errors.As(err, &committed) {
		// The write is on the primary: whoever waits for replication must
		// still wait for it.
		rcpt.commit(committed.LSN)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// stmt is a "prepared" statement: the SQL, forwarded on each execution.
type stmt struct {
	cn    *conn
	query string
}

func (s *stmt) Close() error  { return nil }
func (s *stmt) NumInput() int { return -1 }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.cn.ExecContext(ctx, s.query, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.cn.QueryContext(ctx, s.query, args)
}

func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error { return s.cn.CheckNamedValue(nv) }

func named(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, a := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return out
}
