package forward_test

// Exactly-once in the interleavings that need more than one executor, a
// lost reply or a partition; no session state crossing units; the
// statement cache after a schema change; capacity.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// addExecutor starts another executor on e's primary, serving on loopback.
func (e *env) addExecutor(t *testing.T, cfg executor.Config) (*executor.Executor, string) {
	t.Helper()
	if cfg.DSN == "" && cfg.Pool == nil {
		cfg.DSN = e.cluster.Primary.DSN("")
	}
	cfg.Secret = testkit.Secret
	return serveExecutor(t, cfg)
}

// TestNoSessionStateCrossesUnits runs, on an executor with one primary
// connection, units that leave session state behind, then other units that
// would be hurt by it: none is. A plain INSERT keeps its connection (it
// pays no reset).
func TestNoSessionStateCrossesUnits(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	for _, q := range []string{
		`CREATE SCHEMA other`,
		`CREATE TABLE other.items (LIKE public.items INCLUDING ALL)`,
		`CREATE FUNCTION sneaky() RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('search_path', 'other', false); RETURN 1; END $$`,
		`CREATE FUNCTION harmless(x int) RETURNS int LANGUAGE sql AS $$ SELECT x + 1 $$`,
	} {
		if _, err := e.primary.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, addr := e.addExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN("") + "&pool_max_conns=1"})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: addr, Timeout: 5 * time.Second})
	pid := func() int {
		t.Helper()
		var p int
		if err := db.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// victims are units of other callers, each hurt by one kind of leak.
	victims := func(t *testing.T, tag string) {
		t.Helper()
		for i := 0; i < 3; i++ {
			if _, err := db.ExecContext(ctx, `INSERT INTO items (name) VALUES ($1)`, fmt.Sprintf("%s-%d", tag, i)); err != nil {
				t.Fatalf("victim insert: %v", err)
			}
		}
		if n := e.count(t, "name LIKE $1", tag+"-%"); n != 3 {
			t.Fatalf("%d of 3 rows in public.items: the victims' rows went elsewhere", n)
		}
		if _, err := db.ExecContext(ctx, `SELECT pg_sleep(0.01)`); err != nil {
			t.Fatalf("victim statement: %v", err)
		}
		var locked bool
		if err := e.primary.QueryRow(ctx, `SELECT pg_try_advisory_lock(42)`).Scan(&locked); err != nil {
			t.Fatal(err)
		}
		if !locked {
			t.Fatal("a session advisory lock outlived the unit that took it")
		}
		if _, err := e.primary.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		leave func() error
	}{
		{"SET search_path", func() error { _, err := db.ExecContext(ctx, `SET search_path TO other`); return err }},
		{"CREATE TEMP TABLE", func() error {
			_, err := db.ExecContext(ctx, `CREATE TEMP TABLE items (id bigserial, name text, qty int)`)
			return err
		}},
		{"SET statement_timeout", func() error { _, err := db.ExecContext(ctx, `SET statement_timeout = 1`); return err }},
		{"DEALLOCATE ALL", func() error { _, err := db.ExecContext(ctx, `DEALLOCATE ALL`); return err }},
		{"session advisory lock", func() error { _, err := db.ExecContext(ctx, `SELECT pg_advisory_lock(42)`); return err }},
		{"function that sets search_path", func() error { _, err := db.ExecContext(ctx, `SELECT sneaky()`); return err }},
		{"DO block", func() error {
			_, err := db.ExecContext(ctx, `DO $$ BEGIN EXECUTE 'SET search_path TO other'; END $$`)
			return err
		}},
		{"SET in a transaction", func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `SET search_path TO other`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('in-other')`); err != nil {
				return err
			}
			return tx.Commit()
		}},
		{"function in a transaction", func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `SELECT sneaky()`); err != nil {
				return err
			}
			return tx.Commit()
		}},
		{"lock in a rolled back transaction", func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_lock(42)`); err != nil {
				return err
			}
			return tx.Rollback()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := pid()
			if err := tc.leave(); err != nil {
				t.Fatalf("the unit that leaves state: %v", err)
			}
			if pid() == before {
				t.Error("the unit's connection went back to the pool")
			}
			victims(t, tc.name)
		})
	}
	t.Run("plain statements keep their connection", func(t *testing.T) {
		before := pid()
		for _, q := range []string{
			`INSERT INTO items (name) VALUES ('plain-1')`,
			`INSERT INTO items (name, qty) VALUES ('plain-2', length(now()::text)) RETURNING id`,
			`UPDATE items SET qty = qty + 1 WHERE name = 'plain-1'`,
			`SELECT harmless(1)`,
			`BEGIN`,
		} {
			if q == `BEGIN` {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('plain-tx')`); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if after := pid(); after != before {
			t.Fatalf("a plain statement closed its connection (backend %d, then %d)", before, after)
		}
	})
}

// TestStatementCacheRecoversAfterSchemaChange: after ALTER TABLE, the
// executor's cached statements no longer fit; a lone statement and a
// transaction's first one are prepared afresh and run, a later statement of
// a transaction fails at most once (as with plain pgx).
func TestStatementCacheRecoversAfterSchemaChange(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	_, addr := e.addExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN("") + "&pool_max_conns=1"})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: addr, Timeout: 5 * time.Second})
	if _, err := db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('a')`); err != nil {
		t.Fatal(err)
	}
	const q = `SELECT * FROM items WHERE name = $1`
	columns := func(rows *sql.Rows, err error) (int, error) {
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		cols, err := rows.Columns()
		for rows.Next() {
		}
		if err == nil {
			err = rows.Err()
		}
		return len(cols), err
	}
	if _, err := columns(db.QueryContext(ctx, q, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.primary.Exec(ctx, `ALTER TABLE items ADD COLUMN extra int`); err != nil {
		t.Fatal(err)
	}
	if n, err := columns(db.QueryContext(ctx, q, "a")); err != nil || n != 4 {
		t.Fatalf("lone statement after ALTER TABLE: %d columns, %v", n, err)
	}
	if _, err := e.primary.Exec(ctx, `ALTER TABLE items ADD COLUMN more int`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := columns(tx.QueryContext(ctx, q, "a")); err != nil || n != 5 {
		t.Fatalf("a transaction's first statement after ALTER TABLE: %d columns, %v", n, err)
	}
	tx.Rollback()
	if _, err := e.primary.Exec(ctx, `ALTER TABLE items ADD COLUMN most int`); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := 0; i < 10; i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
		n, err := columns(tx.QueryContext(ctx, q, "a"))
		var pe *pgconn.PgError
		switch {
		case err == nil && n == 6:
		case errors.As(err, &pe) && pe.Code == "0A000":
			failed++
		default:
			t.Fatalf("attempt %d: %d columns, %v", i, n, err)
		}
		tx.Rollback()
	}
	if failed > 1 {
		t.Fatalf("%d of 10 transactions failed with 0A000 after ALTER TABLE; plain pgx fails at most once", failed)
	}
}

// TestDurableReadOnlyTransaction: under durable deduplication a forwarded
// read-only transaction commits (it has nothing to record).
func TestDurableReadOnlyTransaction(t *testing.T) {
	e := startEnv(t, func(x *executor.Config, _ *forward.ClientConfig) { x.DurableDedup = true })
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit of a read-only transaction: %v", err)
	}
}

// TestResolveLeavesTombstone: an executor that answers "not committed" for
// a unit it never saw keeps that answer true: the unit, should it still
// arrive, is refused, not run.
func TestResolveLeavesTombstone(t *testing.T) {
	e := startEnv(t)
	api := rawClient(t, e.addr, testkit.Secret)
	ctx := protoCtx()
	id := id16()
	inst := e.exec.Instance()
	r, err := api.Resolve(ctx, &forwardpb.ResolveRequest{Unit: &forwardpb.Unit{RequestId: id, Attempt: 2, Instance: inst}})
	if err != nil || r.GetOutcome() != forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED {
		t.Fatalf("resolve of a unit never sent: %v %v", r.GetOutcome(), err)
	}
	var md metadata.MD
	_, err = api.Exec(ctx, insertReq(id, 2, inst, "late"), grpc.Trailer(&md))
	if status.Code(err) != codes.Aborted || first1(md, "flypg-outcome") != "not-committed" {
		t.Fatalf("the unit arriving after Resolve said it did not commit: %v %v, want it refused", err, md)
	}
	if n := e.count(t, "name = 'late'"); n != 0 {
		t.Fatal("a unit declared not committed ran")
	}
}

// TestCommitSettlingIsBounded: a transaction whose COMMIT reply is lost
// behind a partition is settled within the client's Timeout of its COMMIT
// (as a statement's retries are), not for as long as the caller's deadline:
// it is in doubt, never reported as aborted, and it did commit.
func TestCommitSettlingIsBounded(t *testing.T) {
	e := startEnv(t)
	link := pgtest.NewLinkT(t, "app-executor", e.addr)
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: link.Addr(), Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('partitioned')`); err != nil {
		t.Fatal(err)
	}
	if err := link.SetRTT(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	cut := e.waitCommitted("partitioned", link.ResetPeer)
	start := time.Now()
	err = tx.Commit()
	took := time.Since(start)
	if cerr := <-cut; cerr != nil {
		t.Fatal(cerr)
	}
	// Heal, as a partition does, before the caller's deadline.
	if err := link.Clear(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, forward.ErrInDoubt) {
		t.Fatalf("COMMIT whose reply was lost behind a partition: %v, want ErrInDoubt", err)
	}
	if took > 3*time.Second {
		t.Fatalf("COMMIT took %v to settle with a 1s client Timeout", took)
	}
	if n := e.count(t, "name = 'partitioned'"); n != 1 {
		t.Fatalf("%d rows", n)
	}
}

// TestRetryNamesTheInstanceOfItsConnection: a unit whose first attempt
// committed on executor A, behind a connection the client had just made,
// and whose reply was lost, is retried on executor B, which the client
// knew before: the retry must not name B (B would run it again).
func TestRetryNamesTheInstanceOfItsConnection(t *testing.T) {
	e := startEnv(t)
	_, addrB := e.addExecutor(t, executor.Config{})
	linkA := pgtest.NewLinkT(t, "to-a", e.addr) // e.exec is A
	linkB := pgtest.NewLinkT(t, "to-b", addrB)
	r := manual.NewBuilderWithScheme("flypgtest")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: linkB.Addr()}}})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: "flypgtest:///executors", ConnectWait: 20 * time.Second, Timeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithResolvers(r)}})
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('on-b')`); err != nil {
		t.Fatal(err) // the client now knows B
	}
	// Switch to A, slowly: the write below starts before the connection
	// to A is made.
	if err := linkA.SetRTT(400 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := linkB.Cut(); err != nil {
		t.Fatal(err)
	}
	r.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: linkA.Addr()}}})
	// Once the write committed on A, lose its reply and switch back to B.
	lost := e.waitCommitted("moved", func() error {
		if err := linkA.ResetPeer(); err != nil {
			return err
		}
		if err := linkA.Cut(); err != nil {
			return err
		}
		if err := linkB.Restore(); err != nil {
			return err
		}
		r.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: linkB.Addr()}}})
		return nil
	})
	_, err := db.ExecContext(ctx, `INSERT INTO items (name) VALUES ('moved')`)
	if lerr := <-lost; lerr != nil {
		t.Fatal(lerr)
	}
	var ce *forward.CommittedError
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		t.Fatalf("write whose reply was lost: %v: the retry ran again on the other executor (the table's unique key stopped it)", err)
	}
	if err != nil && !errors.Is(err, forward.ErrInDoubt) && !errors.As(err, &ce) {
		t.Fatalf("write whose reply was lost: %v", err)
	}
	if n := e.count(t, "name = 'moved'"); n != 1 {
		t.Fatalf("%d rows for one write (err %v): the retry ran again on the other executor", n, err)
	}
}

// TestCapacityWaitsLikeAPool: units wait for a slot as plain GORM waits for
// its pool, bounded by their deadline, and transactions cannot take every
// slot from the statements their clients send meanwhile.
func TestCapacityWaitsLikeAPool(t *testing.T) {
	e := startEnv(t)
	_, addr := e.addExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN("") + "&pool_max_conns=4"})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: addr, Timeout: 20 * time.Second})
	ctx := context.Background()
	run := func(n int, unit func(i int) error) []error {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = unit(i) }()
		}
		wg.Wait()
		return errs
	}
	check := func(what string, errs []error) {
		t.Helper()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s %d: %v", what, i, err)
			}
		}
	}
	// Twenty transactions of 300 ms on four connections.
	check("transaction", run(20, func(i int) error {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) SELECT $1 FROM pg_sleep(0.3)`, fmt.Sprintf("slow-%d", i)); err != nil {
			return err
		}
		return tx.Commit()
	}))
	// Eight transactions that also write through the pool, outside the
	// transaction, while it is open.
	check("transaction writing outside itself", run(8, func(i int) error {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ($1)`, fmt.Sprintf("in-%d", i)); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO items (name) SELECT $1 FROM pg_sleep(0.1)`, fmt.Sprintf("out-%d", i)); err != nil {
			return err
		}
		return tx.Commit()
	}))
	if n := e.count(t, "name LIKE 'slow-%' OR name LIKE 'in-%' OR name LIKE 'out-%'"); n != 36 {
		t.Fatalf("%d of 36 rows", n)
	}
}

// TestResolveTakesASlot: a Resolve that reads the primary (durable
// deduplication, an ID this process does not hold) is admitted like any
// unit: with every slot taken it waits for one, then is refused as busy.
func TestResolveTakesASlot(t *testing.T) {
	e := startEnv(t)
	_, addr := e.addExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN("") + "&pool_max_conns=2", MaxConcurrent: 1, QueueTimeout: 200 * time.Millisecond, DurableDedup: true})
	_, db := openClient(t, forward.ClientConfig{Secret: testkit.Secret, Target: addr, Timeout: 5 * time.Second})
	ctx := context.Background()
	// A transaction holds the only slot.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('holding')`); err != nil {
		t.Fatal(err)
	}
	api := rawClient(t, addr, testkit.Secret)
	var md metadata.MD
	_, err = api.Resolve(protoCtx(), &forwardpb.ResolveRequest{Unit: &forwardpb.Unit{RequestId: id16(), Attempt: 2, Instance: "elsewhere"}}, grpc.Trailer(&md))
	if status.Code(err) != codes.ResourceExhausted || first1(md, "flypg-refusal") != "busy" {
		t.Fatalf("Resolve with every slot taken: %v %v, want busy", err, md)
	}
}
