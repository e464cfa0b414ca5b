package forward_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPgxQueryOptions: pgx's query options in front of the arguments are
// options, as pgx's stdlib treats them, not parameters: an execution mode
// or result formats change nothing, a QueryRewriter (pgx.NamedArgs)
// rewrites the query — outside a transaction and inside one. GORM's
// postgres migrator passes pgx.QueryExecModeSimpleProtocol this way.
func TestPgxQueryOptions(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	if _, err := e.db.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ($1, $2)`, pgx.QueryExecModeSimpleProtocol, "plum", 4); err != nil {
		t.Fatalf("Exec with an execution mode: %v", err)
	}
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, q := range []struct {
		name string
		db   interface {
			QueryRowContext(context.Context, string, ...any) *sql.Row
		}
	}{{"autocommit", e.db}, {"transaction", tx}} {
		for _, c := range []struct {
			name  string
			query string
			args  []any
		}{
			{"simple protocol", `SELECT qty FROM items WHERE name = $1`, []any{pgx.QueryExecModeSimpleProtocol, "plum"}},
			{"exec mode and formats", `SELECT qty FROM items WHERE name = $1`, []any{pgx.QueryExecModeExec, pgx.QueryResultFormats{pgx.TextFormatCode}, "plum"}},
			{"named args", `SELECT qty FROM items WHERE name = @name AND qty > @min`, []any{pgx.NamedArgs{"name": "plum", "min": 1}}},
			{"mode then named args", `SELECT qty FROM items WHERE name = @name`, []any{pgx.QueryExecModeSimpleProtocol, pgx.StrictNamedArgs{"name": "plum"}}},
		} {
			var qty int
			if err := q.db.QueryRowContext(ctx, c.query, c.args...).Scan(&qty); err != nil || qty != 4 {
				t.Errorf("%s, %s: qty %d, err %v; want 4", q.name, c.name, qty, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE items SET qty = @qty WHERE name = @name`, pgx.NamedArgs{"qty": 5, "name": "plum"}); err != nil {
		t.Fatalf("Exec with named args in a transaction: %v", err)
	}
	var qty int
	if err := tx.QueryRowContext(ctx, `SELECT qty FROM items WHERE name = 'plum'`).Scan(&qty); err != nil || qty != 5 {
		t.Fatalf("after the named update: qty %d, err %v", qty, err)
	}
	// A rewriter's own error comes back as it is.
	if err := tx.QueryRowContext(ctx, `SELECT @missing`, pgx.StrictNamedArgs{}).Scan(&qty); err == nil {
		t.Fatal("StrictNamedArgs without the argument: no error")
	}
}
