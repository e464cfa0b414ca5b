package forward_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
)

// partsLimit is the executor's MaxResponseBytes in the tests of results in
// parts: far below the results they read, which must arrive whole anyway.
const partsLimit = 64 << 10

// TestResultsInParts reads results many times larger than the executor's
// MaxResponseBytes, on their own and inside transactions: they arrive in
// parts, every row of them, as from a direct connection. Only a single row
// over the limit is refused.
func TestResultsInParts(t *testing.T) {
	e := startEnv(t, func(x *executor.Config, _ *forward.ClientConfig) { x.MaxResponseBytes = partsLimit })
	ctx := context.Background()
	// About 1 MiB of rows: sixteen times the limit.
	const big = `INSERT INTO items (name) SELECT $1 || g FROM generate_series(1, 10000) g RETURNING name, repeat('x', 100)`

	// readAll reads rows to their end and checks every row came, in order.
	readAll := func(t *testing.T, rows interface {
		Next() bool
		Scan(...any) error
		Err() error
		Close() error
	}, prefix string) {
		t.Helper()
		defer rows.Close()
		n := 0
		for rows.Next() {
			var name, pad string
			if err := rows.Scan(&name, &pad); err != nil {
				t.Fatal(err)
			}
			n++
			if !strings.HasPrefix(name, prefix) || len(pad) != 100 {
				t.Fatalf("row %d: %q (%d bytes of padding)", n, name, len(pad))
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("after %d rows: %v", n, err)
		}
		if n != 10000 {
			t.Fatalf("%d rows, want 10000", n)
		}
	}

	// committed checks that a commit LSN came and that 10000 rows match
	// where on the primary.
	committed := func(t *testing.T, rcpt *forward.Receipt, where string) {
		t.Helper()
		if rcpt.LSN() == 0 {
			t.Fatal("no commit LSN")
		}
		if n := e.count(t, where); n != 10000 {
			t.Fatalf("%d rows committed where %s, want 10000", n, where)
		}
	}

	t.Run("lone query", func(t *testing.T) {
		rctx, rcpt := forward.WithReceipt(ctx)
		rows, err := e.db.QueryContext(rctx, big, "lone")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, rows, "lone")
		committed(t, rcpt, "name LIKE 'lone%'")
	})

	t.Run("lone query closed early", func(t *testing.T) {
		rctx, rcpt := forward.WithReceipt(ctx)
		rows, err := e.db.QueryContext(rctx, big, "early")
		if err != nil {
			t.Fatal(err)
		}
		if !rows.Next() {
			t.Fatalf("no first row: %v", rows.Err())
		}
		// As with pgx, the statement still runs to its end and commits.
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		committed(t, rcpt, "name LIKE 'early%'")
	})

	t.Run("exec with a large RETURNING", func(t *testing.T) {
		res, err := e.db.ExecContext(ctx, big, "exec")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 10000 {
			t.Fatalf("RowsAffected %d, want 10000", n)
		}
	})

	t.Run("in a transaction", func(t *testing.T) {
		rctx, rcpt := forward.WithReceipt(ctx)
		tx, err := e.db.BeginTx(rctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		rows, err := tx.QueryContext(rctx, big, "intx")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, rows, "intx")
		// A result closed before its end leaves the transaction usable.
		rows, err = tx.QueryContext(rctx, `SELECT name, repeat('x', 100) FROM items WHERE name LIKE 'intx%'`)
		if err != nil {
			t.Fatal(err)
		}
		rows.Next()
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRowContext(rctx, `SELECT count(*) FROM items WHERE name LIKE 'intx%'`).Scan(&n); err != nil || n != 10000 {
			t.Fatalf("count in the transaction: %d, %v", n, err)
		}
		// The last statement, with COMMIT, reading its result in parts.
		rows, err = tx.QueryContext(forward.LastStatement(rctx), `UPDATE items SET qty = 1 WHERE name LIKE 'intx%' RETURNING name, repeat('x', 100)`)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, rows, "intx")
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		committed(t, rcpt, "name LIKE 'intx%' AND qty = 1")
	})

	t.Run("a row over the limit", func(t *testing.T) {
		const huge = `INSERT INTO items (name) VALUES ($1) RETURNING name, repeat('x', 100000)`
		// On its own the statement commits whatever happens to its
		// result: the error says so.
		_, err := e.db.QueryContext(ctx, huge, "hugelone")
		var ce *forward.CommittedError
		if !errors.As(err, &ce) || ce.LSN == 0 {
			t.Fatalf("err = %v, want a *CommittedError with the LSN", err)
		}
		if n := e.count(t, "name = 'hugelone'"); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
		// In a transaction it is aborted and nothing commits.
		tx, err := e.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Query(huge, "hugetx"); !errors.Is(err, forward.ErrTooLarge) && !errors.Is(err, forward.ErrTxAborted) {
			t.Fatalf("in a transaction: %v, want ErrTooLarge", err)
		}
		if err := tx.Commit(); err == nil {
			t.Fatal("commit after an oversized row succeeded")
		}
		if n := e.count(t, "name = 'hugetx'"); n != 0 {
			t.Fatalf("%d rows of an aborted transaction committed", n)
		}
	})
}

// TestCommitFailsAfterResult: a statement whose COMMIT fails (a deferred
// foreign key) hands over its result first and reports the failure after
// it, as pgx does: on its own, as the rows' error; as the last statement
// of a transaction, from Commit. Nothing commits.
func TestCommitFailsAfterResult(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	if _, err := e.primary.Exec(ctx, `CREATE TABLE parents (id int PRIMARY KEY);
		CREATE TABLE children (id serial PRIMARY KEY, parent_id int NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
		t.Fatal(err)
	}
	const ins = `INSERT INTO children (parent_id) VALUES (1) RETURNING id`
	wantFK := func(t *testing.T, err error) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23503" {
			t.Fatalf("err = %v, want SQLSTATE 23503", err)
		}
	}
	readID := func(t *testing.T, rows interface {
		Next() bool
		Scan(...any) error
		Err() error
		Close() error
	}) {
		t.Helper()
		if !rows.Next() {
			t.Fatalf("no row before the failed COMMIT: %v", rows.Err())
		}
		var id int
		if err := rows.Scan(&id); err != nil || id == 0 {
			t.Fatalf("id %d, %v", id, err)
		}
		if rows.Next() {
			t.Fatal("a second row")
		}
		wantFK(t, rows.Err())
		rows.Close()
	}

	t.Run("lone query", func(t *testing.T) {
		rows, err := e.db.QueryContext(ctx, ins)
		if err != nil {
			t.Fatal(err)
		}
		readID(t, rows)
	})
	t.Run("lone exec", func(t *testing.T) {
		_, err := e.db.ExecContext(ctx, ins)
		wantFK(t, err)
	})
	// In a transaction the statement's rows come, and Commit fails.
	for _, tc := range []struct {
		name  string
		first bool // a statement before the last
	}{{"last statement of a transaction", true}, {"only statement of a transaction", false}} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := e.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.first {
				if _, err := tx.ExecContext(ctx, `SELECT 1`); err != nil {
					t.Fatal(err)
				}
			}
			rows, err := tx.QueryContext(forward.LastStatement(ctx), ins)
			if err != nil {
				t.Fatal(err)
			}
			if !rows.Next() {
				t.Fatalf("no row: %v", rows.Err())
			}
			var id int
			if err := rows.Scan(&id); err != nil || id == 0 {
				t.Fatalf("id %d, %v", id, err)
			}
			rows.Close()
			wantFK(t, tx.Commit())
		})
	}
	if n := e.count(t, "true"); n != 0 {
		t.Fatalf("%d items", n)
	}
	var n int
	if err := e.primary.QueryRow(ctx, `SELECT count(*) FROM children`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d children committed, %v", n, err)
	}
}

// TestNoClientTimeoutByDefault: a client configured without a Timeout
// does not cut off a statement that runs longer than the old default of
// five seconds, as a direct connection would not; the caller's own
// deadline still bounds it.
func TestNoClientTimeoutByDefault(t *testing.T) {
	e := startEnv(t, func(_ *executor.Config, c *forward.ClientConfig) { c.Timeout = 0 })
	ctx := context.Background()
	if _, err := e.db.ExecContext(ctx, `DO $$ BEGIN PERFORM pg_sleep(6); END $$`); err != nil {
		t.Fatalf("a 6 s statement without a deadline: %v", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := e.db.ExecContext(dctx, `SELECT pg_sleep(3)`); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a statement past the caller's deadline: %v, want context.DeadlineExceeded", err)
	}
}
