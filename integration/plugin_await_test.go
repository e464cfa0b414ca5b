package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/internal/testkit"
)

// TestRoundTrips: GORM's default transaction around one Create, Update or
// Delete of a model with nothing after its statement (no after-hooks, no
// association set) costs exactly one round trip to the executor — BEGIN,
// the statement and COMMIT travel together — and one replication wait.
// With after-hooks, COMMIT is a round trip of its own.
func TestRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	db := e.replica
	w := Widget{Name: "w"}
	u := User{Name: "u", Email: "u@example.com"}
	n := Note{Body: "n"}
	d := Document{Title: "d"}
	for _, tc := range []struct {
		name  string
		write func() *gorm.DB
		rpcs  uint64
	}{
		{"Create", func() *gorm.DB { return db.Create(&w) }, 1},
		{"Update", func() *gorm.DB { return db.Model(&w).Update("count", 7) }, 1},
		{"Updates(map)", func() *gorm.DB { return db.Model(&w).Updates(map[string]any{"count": 8, "name": "w2"}) }, 1},
		{"Save (update)", func() *gorm.DB { w.Count = 9; return db.Save(&w) }, 1},
		{"UpdateColumn", func() *gorm.DB { return db.Model(&w).UpdateColumn("count", 10) }, 1},
		{"Delete", func() *gorm.DB { return db.Delete(&w) }, 1},
		{"Create of a model with unset associations", func() *gorm.DB { return db.Create(&u) }, 1},
		{"soft Delete", func() *gorm.DB { return db.Delete(&u) }, 1},
		{"Exec", func() *gorm.DB { return db.Exec("UPDATE widgets SET count = count + 1") }, 1},
		{"SkipDefaultTransaction Create", func() *gorm.DB {
			return db.Session(&gorm.Session{SkipDefaultTransaction: true}).Create(&Widget{Name: "skip"})
		}, 1},
		{"Create with AfterCreate", func() *gorm.DB { return db.Create(&n) }, 2},
		{"Update with AfterUpdate", func() *gorm.DB { return db.Model(&n).Update("body", "m") }, 2},
		{"Delete with AfterDelete", func() *gorm.DB { return db.Delete(&n) }, 2},
		// BEGIN+INSERT, one per audit row written by AfterCreate and
		// AfterSave, COMMIT.
		{"Create with writing hooks", func() *gorm.DB { return db.Create(&d) }, 4},
		// BEGIN+the BeforeCreate hook's audit row, then the INSERT
		// together with COMMIT.
		{"Create with a writing before-hook", func() *gorm.DB { return db.Create(&Ticket{Subject: "t"}) }, 2},
		// BEGIN+INSERT user, the profile's upsert, COMMIT.
		{"Create with a has-one set", func() *gorm.DB {
			return db.Create(&User{Name: "p", Email: "p@example.com", Profile: &Profile{Bio: "b"}})
		}, 3},
	} {
		rpcs, waits := e.counted(func() { ok(t, tc.write()) })
		if rpcs != tc.rpcs {
			t.Errorf("%s: %d round trips to the executor, want %d", tc.name, rpcs, tc.rpcs)
		}
		if waits != 1 {
			t.Errorf("%s: %d replication waits, want 1", tc.name, waits)
		}
	}
	if n.Ran == nil || len(n.Ran) != 3 {
		t.Errorf("Note hooks ran %v", n.Ran)
	}
}

// TestNoAwait: under fly.NoAwait a write is forwarded and committed, but
// the call returns without waiting for the replica: the tracker is never
// asked. The write still reaches the replica by itself.
func TestNoAwait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := fly.NoAwait(context.Background())
	w := Widget{Name: "fire-and-forget"}
	rpcs, waits := e.counted(func() { ok(t, e.replica.WithContext(ctx).Create(&w)) })
	if rpcs != 1 || waits != 0 {
		t.Fatalf("NoAwait Create: %d round trips, %d waits; want 1 and 0", rpcs, waits)
	}
	if w.ID == 0 {
		t.Fatal("NoAwait Create returned no ID")
	}
	if n := countRows(t, e.plain, "widgets", "id = ?", w.ID); n != 1 {
		t.Fatal("NoAwait write is not on the primary")
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return countRows(t, e.replica, "widgets", "id = ?", w.ID) == 1
	}, "the NoAwait write to replicate")

	// Transactions, Exec and Call honour it too.
	_, waits = e.counted(func() {
		noErr(t, e.replica.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			return tx.Create(&Widget{Name: "nowait-tx"}).Error
		}))
		ok(t, e.replica.WithContext(ctx).Exec("UPDATE widgets SET count = count + 1"))
	})
	if waits != 0 {
		t.Fatalf("NoAwait transaction and Exec waited %d times", waits)
	}
	// Without the marker the same handle waits again.
	_, waits = e.counted(func() { ok(t, e.replica.Create(&Widget{Name: "awaited"})) })
	if waits != 1 {
		t.Fatalf("a plain write after NoAwait ones waited %d times, want 1", waits)
	}
}

// TestReplicationLag checks the test environment itself: the shared
// cluster's replica lags behind the primary, so a read right after a write
// that was NOT awaited misses it. That is what gives every read-your-writes
// assertion of the suite its meaning: they pass because the plugin waited.
func TestReplicationLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	misses := 0
	for i := range 5 {
		w := Widget{Name: fmt.Sprintf("lag-%d", i)}
		ok(t, e.replica.WithContext(fly.NoAwait(context.Background())).Create(&w))
		if countRows(t, e.replica, "widgets", "id = ?", w.ID) == 0 {
			misses++
		}
	}
	t.Logf("%d of 5 reads right after an un-awaited write missed it", misses)
	if misses == 0 {
		t.Fatalf("the replica never lagged (replication delay %s): read-your-writes checks would not detect a missing wait", replicationDelay)
	}
	// The same with the wait: never a miss.
	for i := range 5 {
		w := Widget{Name: fmt.Sprintf("awaited-%d", i)}
		ok(t, e.replica.Create(&w))
		if countRows(t, e.replica, "widgets", "id = ?", w.ID) != 1 {
			t.Fatalf("awaited write %d not read back", i)
		}
	}
}

// TestContextCancellation: a cancelled context fails the call cleanly and
// writes nothing; a long statement on the primary with a short deadline
// returns promptly and is cancelled on the primary; the handle keeps
// working.
func TestContextCancellation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name string
		run  func(db *gorm.DB) error
	}{
		{"Create", func(db *gorm.DB) error { return db.Create(&Widget{Name: "cancelled"}).Error }},
		{"Exec", func(db *gorm.DB) error { return db.Exec("INSERT INTO widgets (name) VALUES ('cancelled')").Error }},
		{"Transaction", func(db *gorm.DB) error {
			return db.Transaction(func(tx *gorm.DB) error { return tx.Create(&Widget{Name: "cancelled"}).Error })
		}},
		{"local read", func(db *gorm.DB) error { return db.First(&Widget{}).Error }},
	} {
		err := tc.run(e.replica.WithContext(cancelled))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", tc.name, err)
		}
	}
	if n := countRows(t, e.plain, "widgets", "name = ?", "cancelled"); n != 0 {
		t.Fatalf("%d writes with a cancelled context reached the primary", n)
	}

	sleeping := func() int64 {
		return countRows(t, e.plain, "pg_stat_activity",
			"datname = ? AND state = 'active' AND query LIKE ?", e.dbname, "%pg_sleep(10)%")
	}
	for _, tc := range []struct {
		name string
		run  func(db *gorm.DB) error
	}{
		{"UsePrimary read", func(db *gorm.DB) error {
			return db.Clauses(flypg.UsePrimary).Raw("SELECT pg_sleep(10)").Scan(new(string)).Error
		}},
		{"write", func(db *gorm.DB) error {
			return db.Exec("INSERT INTO widgets (name) SELECT 'slow' FROM pg_sleep(10)").Error
		}},
		{"transaction", func(db *gorm.DB) error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&Widget{Name: "slow"}).Error; err != nil {
					return err
				}
				return tx.Exec("SELECT pg_sleep(10)").Error
			})
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := tc.run(e.replica.WithContext(ctx))
		took := time.Since(start)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
		case txDeadlineBug(err):
			// The race TestTransactionDeadlineError reproduces
			// deterministically; the call still failed cleanly.
			t.Logf("%s: known bug, the deadline is not reported as context.DeadlineExceeded: %v", tc.name, err)
		default:
			t.Errorf("%s with a 300ms deadline: %v, want context.DeadlineExceeded", tc.name, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s with a 300ms deadline returned after %s", tc.name, took)
		}
		// The executor cancels the statement on the primary.
		testkit.Eventually(t, 10*time.Second, func() bool { return sleeping() == 0 }, tc.name+": pg_sleep cancelled on the primary")
		if n := countRows(t, e.plain, "widgets", "name = ?", "slow"); n != 0 {
			t.Errorf("%s: the timed-out write committed", tc.name)
		}
	}

	// Still usable.
	w := Widget{Name: "after"}
	ok(t, e.replica.Create(&w))
	if countRows(t, e.replica, "widgets", "id = ?", w.ID) != 1 {
		t.Fatal("write after cancellations not read back")
	}
}

// txDeadlineBug recognizes the error of the bug TestTransactionDeadlineError
// shows: a forwarded transaction aborted by its context's deadline, reported
// as a gRPC DeadlineExceeded status that does not match
// context.DeadlineExceeded.
func txDeadlineBug(err error) bool {
	return errors.Is(err, forward.ErrTxAborted) && status.Code(err) == codes.DeadlineExceeded
}

// TestTransactionDeadlineError: when a transaction's context reaches its
// deadline while a statement runs, the error must match
// context.DeadlineExceeded, as it does with plain GORM (pgx) and for a
// lone forwarded statement, so that callers can tell a timeout from other
// failures. The transaction's context ends before the statement's here,
// which makes the outcome deterministic; with one context for both (the
// usual db.WithContext(ctx).Transaction) the same happens now and then.
func TestTransactionDeadlineError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	matches := map[string]error{}
	for _, h := range []struct {
		name string
		db   *gorm.DB
	}{{"plain", e.plain}, {"replica", e.replica}} {
		txCtx, cancelTx := context.WithTimeout(context.Background(), 200*time.Millisecond)
		stmtCtx, cancelStmt := context.WithTimeout(context.Background(), 400*time.Millisecond)
		start := time.Now()
		tx := h.db.WithContext(txCtx).Begin()
		ok(t, tx)
		err := tx.WithContext(stmtCtx).Exec("SELECT pg_sleep(10)").Error
		took := time.Since(start)
		tx.Rollback()
		cancelTx()
		cancelStmt()
		if err == nil || took > 3*time.Second {
			t.Fatalf("%s: statement past the deadline returned %v after %s", h.name, err, took)
		}
		matches[h.name] = err
	}
	if !errors.Is(matches["plain"], context.DeadlineExceeded) {
		t.Fatalf("plain GORM's error does not match context.DeadlineExceeded (the reference changed?): %v", matches["plain"])
	}
	if err := matches["replica"]; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("forward/tx.go clientTx.await: a forwarded transaction aborted by its context's deadline returns a gRPC DeadlineExceeded status that does not match context.DeadlineExceeded: %v", err)
	}
}

// TestTwoDatabases: two *gorm.DB, each with its own plugin, executor and
// tracker on its own database, work side by side, concurrently, without
// seeing each other's rows or counting each other's work.
func TestTwoDatabases(t *testing.T) {
	t.Parallel()
	envs := []*env{newEnv(t), newEnv(t)}
	if envs[0].rPlug.Tracker() == envs[1].rPlug.Tracker() {
		t.Fatal("the two plugins share a tracker")
	}
	const writes = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*writes)
	for i, e := range envs {
		wg.Go(func() {
			for j := range writes {
				w := Widget{Name: fmt.Sprintf("db%d-%02d", i, j), Count: j}
				if err := e.replica.Create(&w).Error; err != nil {
					errs <- fmt.Errorf("db%d create %d: %w", i, j, err)
					return
				}
				var got Widget
				if err := e.replica.First(&got, w.ID).Error; err != nil || got.Name != w.Name {
					errs <- fmt.Errorf("db%d read-your-write %d: %+v, %v", i, j, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, e := range envs {
		names := widgetNames(t, e.replica)
		if len(names) != writes {
			t.Errorf("database %d holds %d widgets, want %d", i, len(names), writes)
		}
		for _, n := range names {
			if n[:3] != fmt.Sprintf("db%d", i) {
				t.Errorf("database %d holds %s", i, n)
			}
		}
		s := e.stats()
		if s.Forward.RPCs != writes || s.Tracker.Waits != writes {
			t.Errorf("plugin %d counted %d round trips and %d waits, want %d each", i, s.Forward.RPCs, s.Tracker.Waits, writes)
		}
	}
	// One plugin per *gorm.DB.
	other := openGORM(t, envs[1].cluster.Replicas[0].DSN(envs[1].dbname))
	if err := other.Use(envs[0].rPlug); err == nil {
		t.Error("installing an installed plugin in a second *gorm.DB succeeded")
	}
}

// TestMultiStatementExec: an Exec of several statements without arguments
// (a migration file, a maintenance script) works with plain GORM, whose pgx
// driver sends argument-less statements with the simple protocol, and must
// work the same through the replica-region plugin.
func TestMultiStatementExec(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const script = "INSERT INTO tags (name) VALUES ('m1'); INSERT INTO tags (name) VALUES ('m2')"
	ok(t, e.plain.Exec(script))
	ok(t, e.plain.Exec("DELETE FROM tags"))

	if err := e.replica.Exec(script).Error; err != nil {
		t.Fatalf("forward executor prepares every statement, so a multi-statement Exec without arguments fails through the plugin (plain GORM runs it): %v", err)
	}
	wantTagList(t, e.replica, "m1", "m2")
	noErr(t, e.replica.Transaction(func(tx *gorm.DB) error {
		return tx.Exec("UPDATE tags SET name = 'n1' WHERE name = 'm1'; UPDATE tags SET name = 'n2' WHERE name = 'm2'").Error
	}))
	wantTagList(t, e.replica, "n1", "n2")
}
