package wire

// This file holds an in-process database/sql driver that runs every
// statement the way the forwarding path does, with the network replaced by
// protobuf marshalling: the client side encodes the arguments (EncodeArgs),
// the server side decodes them (DecodeArgs), runs the statement with pgx on a
// real connection asking for stdlib's result formats (ResultFormats), reads
// the result (ReadResult), and the client side decodes it (NewRows). A
// PostgreSQL error crosses as a forwardpb.PgError. The real gRPC driver
// follows the same pattern, with an Executor call where this one marshals.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/proto"
)

// harnessMaxBytes is the result limit of the harness.
const harnessMaxBytes = 16 << 20

// openHarness returns a *sql.DB whose connections forward through the
// harness to the PostgreSQL server at dsn.
func openHarness(dsn string) *sql.DB {
	return sql.OpenDB(harnessConnector{dsn: dsn})
}

type harnessConnector struct{ dsn string }

func (c harnessConnector) Connect(ctx context.Context) (driver.Conn, error) {
	pg, err := pgx.Connect(ctx, c.dsn)
	if err != nil {
		return nil, err
	}
	// Each connection decodes with its own type map, as pgx does.
	return &harnessConn{pg: pg, m: pgtype.NewMap()}, nil
}

func (c harnessConnector) Driver() driver.Driver { return harnessDriver{} }

type harnessDriver struct{}

func (harnessDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("harness: use sql.OpenDB")
}

// harnessConn is the client's connection; pg stands for the executor's
// connection to the primary.
type harnessConn struct {
	pg *pgx.Conn
	m  *pgtype.Map
}

var (
	_ driver.QueryerContext    = (*harnessConn)(nil)
	_ driver.ExecerContext     = (*harnessConn)(nil)
	_ driver.NamedValueChecker = (*harnessConn)(nil)
)

// CheckNamedValue accepts every argument unchanged, as stdlib does, so that
// EncodeArgs sees the application's original values.
func (c *harnessConn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (c *harnessConn) Prepare(query string) (driver.Stmt, error) {
	return &harnessStmt{c: c, query: query}, nil
}

func (c *harnessConn) Close() error { return c.pg.Close(context.Background()) }

func (c *harnessConn) Begin() (driver.Tx, error) {
	return nil, errors.New("harness: transactions are not forwarded by this test driver")
}

func (c *harnessConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	res, err := c.forward(ctx, query, args, true)
	if err != nil {
		return nil, err
	}
	return NewRows(res, c.m)
}

func (c *harnessConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	res, err := c.forward(ctx, query, args, false)
	if err != nil {
		return nil, err
	}
	return driver.RowsAffected(res.RowsAffected), nil
}

// forward is the round trip: client encoding, the wire, the executor, the
// wire back.
func (c *harnessConn) forward(ctx context.Context, query string, args []driver.NamedValue, isQuery bool) (*forwardpb.Result, error) {
	vals, err := EncodeArgs(args)
	if err != nil {
		return nil, err
	}
	var req forwardpb.Statement
	if err := wireTrip(&forwardpb.Statement{Sql: query, Args: vals}, &req); err != nil {
		return nil, err
	}

	res, pgErr, err := c.execute(ctx, &req, isQuery)
	if err != nil {
		return nil, err
	}
	if pgErr != nil {
		var back forwardpb.PgError
		if err := wireTrip(pgErr, &back); err != nil {
			return nil, err
		}
		return nil, PgErrorFromProto(&back)
	}
	var back forwardpb.Result
	if err := wireTrip(res, &back); err != nil {
		return nil, err
	}
	return &back, nil
}

// execute is the executor's part. Like stdlib, an Exec without arguments
// goes through pgx.Conn.Exec (the simple protocol, which allows several
// statements); everything else is a Query with stdlib's result formats.
func (c *harnessConn) execute(ctx context.Context, st *forwardpb.Statement, isQuery bool) (*forwardpb.Result, *forwardpb.PgError, error) {
	args, err := DecodeArgs(st.Args)
	if err != nil {
		return nil, nil, err
	}
	var res *forwardpb.Result
	if !isQuery && len(args) == 0 {
		var tag pgconn.CommandTag
		if tag, err = c.pg.Exec(ctx, st.Sql); err == nil {
			res = ResultFromCommandTag(tag)
		}
	} else {
		var rows pgx.Rows
		if rows, err = c.pg.Query(ctx, st.Sql, append([]any{ResultFormats()}, args...)...); err == nil {
			res, err = ReadResult(rows, harnessMaxBytes)
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return nil, PgErrorToProto(pgErr), nil
	}
	if err != nil {
		return nil, nil, err
	}
	return res, nil, nil
}

// wireTrip copies in to out through the protobuf wire format.
func wireTrip(in, out proto.Message) error {
	b, err := proto.Marshal(in)
	if err != nil {
		return fmt.Errorf("harness: marshal: %w", err)
	}
	if err := proto.Unmarshal(b, out); err != nil {
		return fmt.Errorf("harness: unmarshal: %w", err)
	}
	return nil
}

type harnessStmt struct {
	c     *harnessConn
	query string
}

func (s *harnessStmt) Close() error  { return nil }
func (s *harnessStmt) NumInput() int { return -1 }

func (s *harnessStmt) Exec([]driver.Value) (driver.Result, error) {
	return nil, errors.New("harness: use ExecContext")
}

func (s *harnessStmt) Query([]driver.Value) (driver.Rows, error) {
	return nil, errors.New("harness: use QueryContext")
}

func (s *harnessStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.c.ExecContext(ctx, s.query, args)
}

func (s *harnessStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.c.QueryContext(ctx, s.query, args)
}
