package forward_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/internal/testkit"
)

func TestExecAutocommitReturnsLSN(t *testing.T) {
	e := startEnv(t)
	ctx, rcpt := forward.WithReceipt(context.Background())
	res, err := e.db.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ($1, $2)`, "apple", 3)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("RowsAffected = %d", n)
	}
	if rcpt.LSN() == 0 || rcpt.Commits() != 1 || rcpt.RPCs() != 1 {
		t.Fatalf("receipt lsn=%d commits=%d rpcs=%d; want an LSN, 1 commit, 1 round trip", rcpt.LSN(), rcpt.Commits(), rcpt.RPCs())
	}
	// The commit LSN is what a replica must replay to show the write.
	if err := e.tracker.Wait(context.Background(), rcpt.LSN()); err != nil {
		t.Fatal(err)
	}
	var qty int
	if err := e.replica.QueryRow(`SELECT qty FROM items WHERE name = 'apple'`).Scan(&qty); err != nil || qty != 3 {
		t.Fatalf("replica read after wait: qty=%d err=%v", qty, err)
	}
}

func TestQueryReturning(t *testing.T) {
	e := startEnv(t)
	var id int64
	var name string
	err := e.db.QueryRowContext(context.Background(), `INSERT INTO items (name) VALUES ($1) RETURNING id, name`, "pear").Scan(&id, &name)
	if err != nil || id == 0 || name != "pear" {
		t.Fatalf("RETURNING: id=%d name=%q err=%v", id, name, err)
	}
}

func TestTransactionCommit(t *testing.T) {
	e := startEnv(t)
	before := e.client.Stats().RPCs
	ctx, rcpt := forward.WithReceipt(context.Background())
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ('a', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE items SET qty = qty + 1 WHERE name = 'a'`); err != nil {
		t.Fatal(err)
	}
	// Reads inside the transaction run on the primary and see its writes.
	var qty int
	if err := tx.QueryRowContext(ctx, `SELECT qty FROM items WHERE name = 'a'`).Scan(&qty); err != nil || qty != 2 {
		t.Fatalf("read inside tx: qty=%d err=%v", qty, err)
	}
	if n := e.count(t, "name = 'a'"); n != 0 {
		t.Fatal("uncommitted row visible outside the transaction")
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if rpcs := e.client.Stats().RPCs - before; rpcs != 4 {
		t.Fatalf("3 statements + COMMIT took %d round trips, want 4 (BEGIN travels with the first)", rpcs)
	}
	if rcpt.LSN() == 0 {
		t.Fatal("commit LSN not recorded in the BeginTx context's receipt")
	}
	if n := e.count(t, "name = 'a' AND qty = 2"); n != 1 {
		t.Fatal("committed row missing")
	}
}

func TestTransactionInsertIsTwoRoundTrips(t *testing.T) {
	e := startEnv(t)
	ctx, rcpt := forward.WithReceipt(context.Background())
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('x')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if rcpt.RPCs() != 2 {
		t.Fatalf("BEGIN + INSERT + COMMIT took %d round trips, want 2", rcpt.RPCs())
	}
}

func TestTransactionRollbackAndSavepoints(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustExec := func(q string) {
		t.Helper()
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec(`INSERT INTO items (name) VALUES ('keep')`)
	mustExec(`SAVEPOINT sp1`)
	mustExec(`INSERT INTO items (name) VALUES ('drop')`)
	// A failing statement aborts the transaction, as on a direct
	// connection; rolling back to the savepoint recovers it.
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('keep')`); err == nil {
		t.Fatal("duplicate insert succeeded")
	}
	mustExec(`ROLLBACK TO SAVEPOINT sp1`)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if e.count(t, "name = 'keep'") != 1 || e.count(t, "name = 'drop'") != 0 {
		t.Fatal("savepoint rollback not applied")
	}

	if tx, err = e.db.BeginTx(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('gone')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if e.count(t, "name = 'gone'") != 0 {
		t.Fatal("rolled-back row present")
	}
}

func TestCommitAfterFailedStatementRollsBack(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('p')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `SELECT 1/0`); err == nil {
		t.Fatal("division by zero succeeded")
	}
	if err := tx.Commit(); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("commit of an aborted transaction: %v, want pgx.ErrTxCommitRollback (as stdlib)", err)
	}
	if e.count(t, "name = 'p'") != 0 {
		t.Fatal("row of a rolled-back transaction present")
	}
}

func TestPgErrorFidelity(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	if _, err := e.primary.Exec(ctx, `CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint NOT NULL REFERENCES items(id))`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('dup')`); err != nil {
		t.Fatal(err)
	}
	_, err := e.db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('dup')`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("err %T %v is not a *pgconn.PgError", err, err)
	}
	if pe.Code != "23505" || pe.ConstraintName != "items_name_key" || pe.TableName != "items" || !strings.Contains(pe.Detail, "(name)=(dup)") || pe.Severity != "ERROR" {
		t.Fatalf("PgError fields: %+v", pe)
	}

	// GORM over the forwarding pool translates them like over pgx.
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: e.db}), &gorm.Config{TranslateError: true, Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	type Item struct {
		ID   int64
		Name string
	}
	if err := gdb.Create(&Item{Name: "dup"}).Error; !errors.Is(err, gorm.ErrDuplicatedKey) {
		t.Fatalf("gorm duplicate: %v, want gorm.ErrDuplicatedKey", err)
	}
	type Order struct {
		ID     int64
		ItemID int64
	}
	if err := gdb.Create(&Order{ItemID: 424242}).Error; !errors.Is(err, gorm.ErrForeignKeyViolated) {
		t.Fatalf("gorm foreign key: %v, want gorm.ErrForeignKeyViolated", err)
	}
}

func TestCancellationReachesPrimary(t *testing.T) {
	e := startEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.db.ExecContext(ctx, `SELECT pg_sleep(30)`)
	if err == nil {
		t.Fatal("sleep finished")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancelled call returned after %v", d)
	}
	// The query is gone from the primary, not left running for 30 s.
	testkit.Eventually(t, 5*time.Second, func() bool {
		var n int
		if err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	}, "pg_sleep to end on the primary after the call was cancelled")
}

// TestBrokenStreamRollsBack: a transaction whose client goes away before
// COMMIT leaves nothing on the primary and no connection idle in
// transaction.
func TestBrokenStreamRollsBack(t *testing.T) {
	e := startEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('orphan')`); err != nil {
		t.Fatal(err)
	}
	// The transaction is open on the primary, so the wait below can fail.
	if n := e.idleInTransaction(t); n != 1 {
		t.Fatalf("%d connections idle in transaction with the transaction open, want 1", n)
	}
	cancel() // the stream breaks
	testkit.Eventually(t, 5*time.Second, func() bool { return e.idleInTransaction(t) == 0 },
		"no connection idle in transaction after the stream broke")
	if e.count(t, "name = 'orphan'") != 0 {
		t.Fatal("row of a broken transaction committed")
	}
	if err := tx.Commit(); err == nil {
		t.Fatal("commit after the stream broke succeeded")
	}
}

func TestReadOnlyTransactionRefusesWrites(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('ro')`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Fatalf("write in a read-only transaction: %v, want SQLSTATE 25006", err)
	}
	var iso string
	tx2, err := e.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx2.QueryRowContext(ctx, `SHOW transaction_isolation`).Scan(&iso); err != nil || iso != "serializable" {
		t.Fatalf("isolation = %q, %v", iso, err)
	}
	tx2.Rollback()
}

func TestStatementsRefusedInTransactionBlock(t *testing.T) {
	e := startEnv(t)
	// VACUUM cannot run inside BEGIN; the executor runs it on its own.
	if _, err := e.db.ExecContext(context.Background(), `VACUUM items`); err != nil {
		t.Fatalf("VACUUM: %v", err)
	}
}

func TestUnreachableExecutor(t *testing.T) {
	_, db := openClient(t, forward.ClientConfig{Target: "127.0.0.1:1", Secret: testkit.Secret, Timeout: 500 * time.Millisecond})
	start := time.Now()
	_, err := db.ExecContext(context.Background(), `INSERT INTO items (name) VALUES ('x')`)
	elapsed := time.Since(start)
	if !errors.Is(err, forward.ErrUnavailable) || !errors.Is(err, driver.ErrBadConn) {
		t.Fatalf("err = %v, want ErrUnavailable (never sent, so also driver.ErrBadConn)", err)
	}
	var fe *forward.Error
	if !errors.As(err, &fe) || fe.Target != "127.0.0.1:1" || !strings.Contains(err.Error(), "127.0.0.1:1") || !fe.SafeToRetry() {
		t.Fatalf("error does not name the target or is not safe to retry: %v", err)
	}
	// database/sql retries a bad connection twice more; each attempt is
	// bounded by the timeout.
	if elapsed > 2*time.Second {
		t.Fatalf("failed after %v; the client timeout is 500ms", elapsed)
	}
	if err := db.PingContext(context.Background()); !errors.Is(err, forward.ErrUnavailable) {
		t.Fatalf("ping: %v", err)
	}
}

func TestLastStatementCommitsInTheSameRoundTrip(t *testing.T) {
	e := startEnv(t)
	ctx, rcpt := forward.WithReceipt(context.Background())

	// One statement: BEGIN, INSERT and COMMIT in one round trip.
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := tx.QueryRowContext(forward.LastStatement(ctx), `INSERT INTO items (name) VALUES ('one') RETURNING id`).Scan(&id); err != nil || id == 0 {
		t.Fatalf("last statement: id=%d err=%v", id, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if rcpt.RPCs() != 1 || rcpt.LSN() == 0 || e.count(t, "name = 'one'") != 1 {
		t.Fatalf("rpcs=%d lsn=%d; want 1 round trip, a commit LSN and the row", rcpt.RPCs(), rcpt.LSN())
	}

	// Two statements, the second marked last: two round trips, no COMMIT
	// of its own; the transaction is over once the last one ran.
	rcpt.Reset()
	if tx, err = e.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('two-a')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(forward.LastStatement(ctx), `INSERT INTO items (name) VALUES ('two-b')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `SELECT 1`); !errors.Is(err, forward.ErrAlreadyCommitted) {
		t.Fatalf("statement after the last: %v", err)
	}
	if err := tx.Rollback(); !errors.Is(err, forward.ErrAlreadyCommitted) {
		t.Fatalf("rollback after the last statement: %v, want ErrAlreadyCommitted", err)
	}
	if rcpt.RPCs() != 2 || e.count(t, "name LIKE 'two-%'") != 2 {
		t.Fatalf("rpcs=%d; want 2 and both rows", rcpt.RPCs())
	}

	// A failing last statement commits nothing.
	if tx, err = e.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('three')`); err != nil {
		t.Fatal(err)
	}
	_, err = tx.ExecContext(forward.LastStatement(ctx), `INSERT INTO items (name) VALUES ('one')`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Fatalf("failing last statement: %v", err)
	}
	if err := tx.Commit(); err == nil {
		t.Fatal("commit after a failed last statement succeeded")
	}
	if e.count(t, "name = 'three'") != 0 {
		t.Fatal("a transaction whose last statement failed committed")
	}
}

func TestMultiStatementExec(t *testing.T) {
	e := startEnv(t)
	ctx, rcpt := forward.WithReceipt(context.Background())
	res, err := e.db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('m1'); INSERT INTO items (name) VALUES ('m2')`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("RowsAffected = %d, want the last statement's 1 (as pgx)", n)
	}
	if rcpt.LSN() == 0 || e.count(t, "name IN ('m1', 'm2')") != 2 {
		t.Fatal("multi-statement Exec did not commit both rows with an LSN")
	}
	// All or nothing, as with pgx: a failing statement rolls back the others.
	if _, err := e.db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('m3'); INSERT INTO items (name) VALUES ('m1')`); err == nil {
		t.Fatal("duplicate in a multi-statement Exec succeeded")
	}
	if e.count(t, "name = 'm3'") != 0 {
		t.Fatal("part of a failed multi-statement Exec committed")
	}
	// In a transaction too.
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('t1'); INSERT INTO items (name) VALUES ('t2')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if e.count(t, "name IN ('t1', 't2')") != 2 {
		t.Fatal("multi-statement Exec in a transaction lost rows")
	}
	// A real syntax error is still one.
	_, err = e.db.ExecContext(ctx, `INSERT INTO nowhere VALUES (1); SELEC 1`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42601" {
		t.Fatalf("syntax error: %v", err)
	}
}

// TestCallsAndSessions runs lone statements both ways a client can send
// them — as messages of a session (the default) and as calls of their own
// — with the same results, errors and cancellation.
func TestCallsAndSessions(t *testing.T) {
	for _, noSessions := range []bool{false, true} {
		name := "session"
		if noSessions {
			name = "call"
		}
		t.Run(name, func(t *testing.T) {
			e := startEnv(t, func(_ *executor.Config, c *forward.ClientConfig) { c.NoSessions = noSessions })
			ctx, rcpt := forward.WithReceipt(context.Background())
			var id int64
			if err := e.db.QueryRowContext(ctx, `INSERT INTO items (name) VALUES ($1) RETURNING id`, name).Scan(&id); err != nil || id == 0 {
				t.Fatalf("insert: %v", err)
			}
			if rcpt.LSN() == 0 {
				t.Fatal("no commit LSN")
			}
			var pe *pgconn.PgError
			if _, err := e.db.ExecContext(ctx, `INSERT INTO items (name) VALUES ($1)`, name); !errors.As(err, &pe) || pe.Code != "23505" {
				t.Fatalf("duplicate: %v", err)
			}
			cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			if _, err := e.db.ExecContext(cctx, `SELECT pg_sleep(5)`); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("cancelled: %v", err)
			}
			// Many at once share the session(s) without mixing answers.
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for i := 0; i < 50; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					var got string
					err := e.db.QueryRowContext(ctx, `INSERT INTO items (name) VALUES ($1) RETURNING name`, fmt.Sprintf("%s-%d", name, i)).Scan(&got)
					if err == nil && got != fmt.Sprintf("%s-%d", name, i) {
						err = fmt.Errorf("answer for %d was %q", i, got)
					}
					errs <- err
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
