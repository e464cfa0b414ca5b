package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// functionFlags collects -function name=SQL flags.
type functionFlags map[string]string

func (f functionFlags) String() string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	return strings.Join(names, ",")
}

func (f functionFlags) Set(v string) error {
	name, sql, ok := strings.Cut(v, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(sql) == "" {
		return fmt.Errorf("want name=SQL, got %q", v)
	}
	if _, dup := f[name]; dup {
		return fmt.Errorf("function %q given twice", name)
	}
	f[name] = sql
	return nil
}

// sqlFunctions serves Call for the standalone executor: each function is
// one SQL statement, run in a transaction of its own on a pool of its own
// (so that whatever session state a function leaves never reaches
// forwarded units) with the call's payload as $1 (text, usually JSON); the
// first column of its first row, as text, is the output (JSON null when it
// returns no row).
type sqlFunctions struct {
	pool  *pgxpool.Pool
	funcs map[string]string
	seg   atomic.Uint64 // the primary's wal_segment_size, once read
}

func (f *sqlFunctions) HandleCall(ctx context.Context, name string, payload []byte) ([]byte, lsn.LSN, error) {
	q, ok := f.funcs[name]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %q", protocol.ErrUnknownFunction, name)
	}
	// One connection for the transaction and the LSN after its commit.
	// (pgxpool's own QueryRow keeps each result referenced from a
	// per-connection batch for a long while.)
	c, err := f.pool.Acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer c.Release()
	tx, err := c.Begin(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	err = executor.RecordCall(ctx, func(query string, args ...any) error {
		_, err := tx.Exec(ctx, query, args...)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	var out *string
	switch err := tx.QueryRow(ctx, q, string(payload)).Scan(&out); {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		var pg *pgconn.PgError
		if errors.As(err, &pg) || errors.Is(err, pgx.ErrTxCommitRollback) {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("COMMIT was sent and its outcome is unknown: %w", errors.Join(protocol.ErrInDoubt, err))
	}
	result := []byte("null")
	if out != nil {
		result = []byte(*out)
	}
	return result, f.commitLSN(ctx, c.Conn()), nil
}

// RecordsCalls: HandleCall records the request ID under durable
// deduplication.
func (f *sqlFunctions) RecordsCalls() bool { return true }

// commitLSN is the primary's insert LSN after a commit, normalized with its
// WAL segment size; 0 if it cannot be read (the caller then cannot wait for
// replication, but the call did commit).
func (f *sqlFunctions) commitLSN(ctx context.Context, c *pgx.Conn) lsn.LSN {
	seg := f.seg.Load()
	if seg == 0 {
		var s string
		if err := c.QueryRow(ctx, lsn.SegmentSizeSQL).Scan(&s); err != nil {
			return 0
		}
		seg = lsn.ParseSegmentSize(s)
		f.seg.Store(seg)
	}
	var text string
	if err := c.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text); err != nil {
		return 0
	}
	l, err := lsn.Parse(text)
	if err != nil {
		return 0
	}
	return l.Normalize(seg)
}
