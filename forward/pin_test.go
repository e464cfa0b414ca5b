package forward_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/internal/testkit"
)

// TestPin runs what a pinned connection must hold: session state that
// one statement sets is there for the next and for a transaction begun on
// the connection, invisible to every other caller, and gone once the
// connection closes, session advisory locks included.
func TestPin(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	x, addr := e.addExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN("") + "&pool_max_conns=2"})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: addr, Timeout: 5 * time.Second})

	lockHeld := func() bool {
		t.Helper()
		var n int
		if err := e.primary.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := forward.Pin(c); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`SET application_name = 'pinned'`)
	exec(`CREATE TEMP TABLE scratch (v int)`)
	exec(`INSERT INTO scratch VALUES (1), (2)`)
	exec(`SELECT pg_advisory_lock(4242)`)
	var app string
	if err := c.QueryRowContext(ctx, `SHOW application_name`).Scan(&app); err != nil || app != "pinned" {
		t.Fatalf("SHOW application_name after SET on the pinned connection: %q, %v", app, err)
	}
	// A transaction on the pinned connection runs on the same session.
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO scratch VALUES (3)`); err != nil {
		t.Fatalf("insert into the temporary table in a transaction: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRowContext(ctx, `SELECT count(*) FROM scratch`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("the temporary table holds %d rows (%v), want 3", n, err)
	}
	// A PostgreSQL error ends its statement, not the pin.
	var pgErr *pgconn.PgError
	if _, err := c.ExecContext(ctx, `INSERT INTO scratch VALUES ('x')`); !errors.As(err, &pgErr) || pgErr.Code != "22P02" {
		t.Fatalf("bad insert: %v, want 22P02", err)
	}
	if err := c.QueryRowContext(ctx, `SELECT count(*) FROM scratch`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("after an error the pin holds %d rows (%v), want 3", n, err)
	}
	// Others see none of it meanwhile.
	if _, err := db.ExecContext(ctx, `SELECT * FROM scratch`); err == nil {
		t.Fatal("another caller sees the pinned connection's temporary table")
	}
	if !lockHeld() {
		t.Fatal("the pinned connection's session advisory lock is not held")
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return !lockHeld() }, "the pinned connection's lock to be released with it")
	testkit.Eventually(t, 30*time.Second, func() bool { return x.OpenTransactions() == 0 }, "the executor to release the pin")
	// Every primary connection serves others afterwards without the state.
	for i := 0; i < 4; i++ {
		var app string
		if err := db.QueryRowContext(ctx, `SHOW application_name`).Scan(&app); err != nil || app == "pinned" {
			t.Fatalf("after the pin: application_name %q (%v)", app, err)
		}
	}
}

// TestPinLost: once the pin's stream broke, the connection refuses
// further statements with ErrPinLost instead of running them on another
// session without the state they expect.
func TestPinLost(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	_, addr := e.addExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN("")})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: addr, Timeout: 5 * time.Second})
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := forward.Pin(c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, `CREATE TEMP TABLE scratch (v int)`); err != nil {
		t.Fatal(err)
	}
	// A statement cancelled mid-way breaks off its unit, and the pin.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.ExecContext(ctx, `INSERT INTO scratch VALUES (1)`)
	if _, err := tx.ExecContext(cctx, `SELECT pg_sleep(10)`); err == nil {
		t.Fatal("a cancelled statement succeeded")
	}
	tx.Rollback()
	_, err = c.ExecContext(ctx, `INSERT INTO scratch VALUES (2)`)
	if !errors.Is(err, forward.ErrPinLost) {
		t.Fatalf("statement after the pin broke: %v, want ErrPinLost", err)
	}
	if r, ok := errors.AsType[*forward.Error](err); ok && r.SafeToRetry() {
		t.Fatal("ErrPinLost is safe to retry on its own")
	}
}
