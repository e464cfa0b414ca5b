package lsn_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/migration"
	"github.com/flypg/flypg/pgtest"
)

type env struct {
	cluster          *pgtest.Cluster
	primary, replica *sql.DB
}

func startEnv(t *testing.T) *env {
	t.Helper()
	c := pgtest.StartT(t, pgtest.Options{Replicas: 1})
	e := &env{cluster: c, primary: openDB(t, c.Primary.DSN("")), replica: openDB(t, c.Replicas[0].DSN(""))}
	ctx := context.Background()
	if _, err := e.primary.ExecContext(ctx, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := migration.Up(ctx, e.primary); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// openDB opens dsn for the test's duration.
func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// write commits one upsert on the primary and returns the commit LSN the
// way the executor reads it: pg_current_wal_insert_lsn() right after COMMIT
// on the same connection.
func (e *env) write(t testing.TB, k, v int) lsn.LSN {
	t.Helper()
	ctx := context.Background()
	conn, err := e.primary.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `INSERT INTO kv VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, k, v); err != nil {
		t.Fatal(err)
	}
	var l lsn.LSN
	if err := conn.QueryRowContext(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

func readReplica(t testing.TB, db *sql.DB, k int) int {
	t.Helper()
	var v int
	err := db.QueryRow(`SELECT v FROM kv WHERE k = $1`, k).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func newTracker(t *testing.T, cfg lsn.Config) *lsn.Tracker {
	t.Helper()
	tr, err := lsn.NewTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestReadYourWrites is the point of the package: after Wait returns, a
// read on the replica sees the write, every time.
func TestReadYourWrites(t *testing.T) {
	e := startEnv(t)
	sources := map[string]func() (lsn.Source, func(time.Duration) time.Duration){
		"replay": func() (lsn.Source, func(time.Duration) time.Duration) {
			return lsn.NewReplaySource(e.replica), nil
		},
		"watch": func() (lsn.Source, func(time.Duration) time.Duration) {
			return lsn.NewWatchSource(e.replica, time.Second), func(time.Duration) time.Duration { return 0 }
		},
	}
	for name, mk := range sources {
		t.Run(name, func(t *testing.T) {
			src, sched := mk()
			tr := newTracker(t, lsn.Config{Source: src, Schedule: sched, Timeout: 2 * time.Second})
			cycles := 500
			if name == "watch" {
				cycles = 50 // the stored function sleeps 50 ms between looks
			}
			for i := 0; i < cycles; i++ {
				target := e.write(t, i, i*10)
				if err := tr.Wait(context.Background(), target); err != nil {
					t.Fatalf("cycle %d: %v", i, err)
				}
				if got := readReplica(t, e.replica, i); got != i*10 {
					t.Fatalf("cycle %d: replica read %d after Wait, want %d", i, got, i*10)
				}
			}
			st := tr.Stats()
			t.Logf("%d cycles: %d looks, %d cache hits", cycles, st.Looks, st.CacheHits)
		})
	}
}

func TestReplaySourceStatus(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	st, err := lsn.NewReplaySource(e.replica).Replay(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !st.InRecovery || st.Replayed == 0 {
		t.Fatalf("replica status %+v, want in recovery with a position", st)
	}
	st, err = lsn.NewReplaySource(e.primary).Replay(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.InRecovery {
		t.Fatalf("primary status %+v, want not in recovery", st)
	}
}

func TestPrimaryAsLocalDatabase(t *testing.T) {
	e := startEnv(t)
	target := e.write(t, 1, 1)
	strict := newTracker(t, lsn.Config{Source: lsn.NewReplaySource(e.primary)})
	if err := strict.Wait(context.Background(), target); !errors.Is(err, lsn.ErrPromoted) {
		t.Fatalf("wait on a primary: %v, want ErrPromoted", err)
	}
	lax := newTracker(t, lsn.Config{Source: lsn.NewReplaySource(e.primary), AllowPrimary: true})
	if err := lax.Wait(context.Background(), target); err != nil {
		t.Fatalf("wait on an allowed primary: %v", err)
	}
}

func TestPromotedReplicaEndsWaits(t *testing.T) {
	e := startEnv(t)
	tr := newTracker(t, lsn.Config{Source: lsn.NewReplaySource(e.replica), Timeout: 30 * time.Second})
	ctx := context.Background()
	// Wait for a position the replica will never reach from the old primary.
	future := e.write(t, 1, 1) + 1<<30
	done := make(chan error, 1)
	go func() { done <- tr.Wait(ctx, future) }()
	if err := e.cluster.Replicas[0].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, lsn.ErrPromoted) {
			t.Fatalf("err = %v, want ErrPromoted", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("waiter still hanging 20 s after promotion")
	}
}

// TestReplicaDownAndBack: while the local database is down, waits end with
// a timeout that names the connection error; once it is back the same
// tracker serves waits again.
func TestReplicaDownAndBack(t *testing.T) {
	e := startEnv(t)
	replica := e.cluster.Replicas[0]
	tr := newTracker(t, lsn.Config{Source: lsn.NewReplaySource(e.replica), Timeout: 500 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	ctx := context.Background()
	if err := tr.Wait(ctx, e.write(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := replica.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	target := e.write(t, 2, 2)
	looksBefore := tr.Stats().Looks
	err := tr.Wait(ctx, target)
	var we *lsn.WaitError
	if !errors.Is(err, lsn.ErrTimeout) || !errors.As(err, &we) || we.LastErr == nil {
		t.Fatalf("wait with the replica down: %v, want a timeout carrying the connection error", err)
	}
	t.Logf("while down: %v", err)
	looksDown := tr.Stats().Looks - looksBefore
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(ctx, target); err != nil {
		t.Fatalf("wait after the replica came back: %v", err)
	}
	if got := readReplica(t, e.replica, 2); got != 2 {
		t.Fatalf("replica read %d, want 2", got)
	}
	// Backing off: half a second of failures at RetryMin 10ms..RetryMax
	// 100ms is a handful of looks, not a tight loop.
	if looksDown > 20 {
		t.Fatalf("%d looks while the replica was down for 0.5 s: no back-off", looksDown)
	}
}

// TestPageBoundaryWritesDoNotHang runs many write+wait cycles with a short
// timeout. Without Normalize about one commit LSN in two thousand lands just
// past a page header and its wait hangs until the timeout.
func TestPageBoundaryWritesDoNotHang(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	e := startEnv(t)
	tr := newTracker(t, lsn.Config{Source: lsn.NewReplaySource(e.replica), Timeout: time.Second})
	normalized := 0
	for i := 0; i < 3000; i++ {
		target := e.write(t, i%100, i)
		if target.Normalize(0) != target {
			normalized++
		}
		if err := tr.Wait(context.Background(), target); err != nil {
			t.Fatalf("cycle %d (target %s): %v", i, target, err)
		}
	}
	t.Logf("%d of 3000 commit LSNs fell in a page header", normalized)
}

// TestFailoverEndsOldTimelineWaits: a replica that follows a new primary
// after a failover ends a wait for a write the new history lacks with
// ErrTimelineChanged, instead of releasing it once the new timeline's
// positions pass the write's LSN (which would claim a lost write is there).
func TestFailoverEndsOldTimelineWaits(t *testing.T) {
	c := pgtest.StartT(t, pgtest.Options{Replicas: 2, ReplicationLinks: true})
	ctx := context.Background()
	primary, replica := openDB(t, c.Primary.DSN("")), openDB(t, c.Replicas[1].DSN(""))
	if _, err := primary.ExecContext(ctx, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	src := lsn.NewReplaySource(replica)
	t.Cleanup(func() { src.Close() })
	tr, err := lsn.NewTracker(lsn.Config{Source: src, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })

	// A write neither replica receives: the failover loses it.
	for i := range c.Replicas {
		if err := c.ReplicationLink(i).Cut(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := primary.ExecContext(ctx, `INSERT INTO kv VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	var text string
	if err := primary.QueryRowContext(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text); err != nil {
		t.Fatal(err)
	}
	lost, err := lsn.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.Wait(ctx, lost) }()
	deadline := time.Now().Add(30 * time.Second)
	for tr.Stats().Waiting == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the wait never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Failover(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// The new primary writes past the lost write's position.
	next := openDB(t, c.Primary.DSN(""))
	for i := 0; i < 100; i++ {
		if _, err := next.ExecContext(ctx, `INSERT INTO kv VALUES ($1, 0) ON CONFLICT (k) DO NOTHING`, 100+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, lsn.ErrTimelineChanged) {
			t.Fatalf("wait for the lost write: %v, want ErrTimelineChanged", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the wait for the lost write did not end")
	}
	var n int
	if err := replica.QueryRowContext(ctx, `SELECT count(*) FROM kv WHERE k = 1`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the lost write reads back %d times on the replica (%v)", n, err)
	}
}
