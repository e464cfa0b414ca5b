package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// TestMain checks that every goroutine started by clusters and links
// (postmaster waiters, toxiproxy connection pumps) has stopped by the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx bounds a test's waits, so a broken cluster fails fast.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requirePostgres skips (or, in CI, fails) tests that need PostgreSQL and
// call Start directly rather than StartT.
func requirePostgres(t *testing.T) {
	t.Helper()
	if _, err := FindBinDir(); errors.Is(err, ErrNoPostgres) {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func connect(t *testing.T, ctx context.Context, n *Node) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, n.DSN(""))
	if err != nil {
		t.Fatalf("connect to %s: %v", n.Name(), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryInt(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var v int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func queryBool(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) bool {
	t.Helper()
	var v bool
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}
