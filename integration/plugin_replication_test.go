package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestReplicationTimeout breaks the replica's replication stream (a black
// hole, then a cut) with the replica plugin's AwaitTimeout at 300ms: a
// forwarded write then commits on the primary but cannot be seen locally,
// and returns an error matching flypg.ErrReplicationTimeout whose
// *flypg.ReplicationError says it committed, with GORM's results (ID,
// RowsAffected) filled in. NoAwait writes and reads on the primary carry
// on. Once replication is back the replica catches up and the next write
// waits normally.
func TestReplicationTimeout(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1, ReplicationLinks: true})
	const await = 300 * time.Millisecond
	e := newEnvWith(t, envConfig{cluster: c, awaitTimeout: await})
	link := c.ReplicationLink(0)
	transferFn, err := flypg.Register(e.pPlug, "transfer", transfer)
	noErr(t, err)
	alice, bob := Account{Owner: "alice", Balance: 100}, Account{Owner: "bob"}
	ok(t, e.replica.Create(&alice))
	ok(t, e.replica.Create(&bob))
	ok(t, e.replica.Exec(`CREATE FUNCTION bump_widget(n text) RETURNS int LANGUAGE sql
		AS $$ UPDATE widgets SET count = count + 1 WHERE name = n RETURNING count $$`))
	ok(t, e.replica.Create(&Widget{Name: "bumped"}))
	ctx := context.Background()

	for _, fault := range []struct {
		name        string
		brk, heal   func() error
		transferred int64
	}{
		{"blackhole", link.Blackhole, link.Clear, 1},
		{"cut", link.Cut, link.Restore, 2},
	} {
		t.Run(fault.name, func(t *testing.T) {
			noErr(t, fault.brk())
			healed := false
			defer func() {
				if !healed {
					fault.heal()
				}
			}()

			w := Widget{Name: fault.name + "-create"}
			start := time.Now()
			res := e.replica.Create(&w)
			took := time.Since(start)
			if !errors.Is(res.Error, flypg.ErrReplicationTimeout) {
				t.Fatalf("Create with replication broken: %v, want ErrReplicationTimeout", res.Error)
			}
			var re *flypg.ReplicationError
			if !errors.As(res.Error, &re) || !re.Committed() || re.LSN == 0 {
				t.Fatalf("error %v is not a committed *ReplicationError with an LSN", res.Error)
			}
			if w.ID == 0 || res.RowsAffected != 1 {
				t.Fatalf("GORM results after the timeout: id %d, rows %d", w.ID, res.RowsAffected)
			}
			if took < await || took > await+5*time.Second {
				t.Errorf("Create returned after %s with AwaitTimeout %s", took, await)
			}
			if countRows(t, e.plain, "widgets", "id = ?", w.ID) != 1 {
				t.Fatal("the timed-out write is not on the primary")
			}
			if countRows(t, e.replica, "widgets", "id = ?", w.ID) != 0 {
				t.Fatal("the replica has the write although replication is broken")
			}
			// A read on the primary sees it.
			var n int64
			ok(t, e.replica.Clauses(flypg.UsePrimary).Model(&Widget{}).Where("id = ?", w.ID).Count(&n))
			if n != 1 {
				t.Fatal("UsePrimary read does not see the committed write")
			}

			// The caller's deadline, when earlier, ends the wait the same
			// way.
			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			start = time.Now()
			sw := Widget{Name: fault.name + "-deadline"}
			err := e.replica.WithContext(short).Create(&sw).Error
			took = time.Since(start)
			cancel()
			if !errors.Is(err, flypg.ErrReplicationTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &re) {
				t.Errorf("Create with a 100ms deadline and replication broken: %v, want a *ReplicationError for the deadline", err)
			}
			if took >= await {
				t.Errorf("Create with a 100ms deadline returned after %s, not before AwaitTimeout %s", took, await)
			}
			if sw.ID == 0 || countRows(t, e.plain, "widgets", "id = ?", sw.ID) != 1 {
				t.Error("the write with the short deadline is not on the primary")
			}

			// NoAwait writes are not held up.
			var waits uint64
			start = time.Now()
			_, waits = e.counted(func() {
				ok(t, e.replica.WithContext(fly.NoAwait(ctx)).Create(&Widget{Name: fault.name + "-nowait"}))
			})
			if waits != 0 || time.Since(start) >= await {
				t.Errorf("NoAwait write with replication broken: %d waits, took %s", waits, time.Since(start))
			}

			// A transaction's Commit and a Call report it the same way.
			err = e.replica.Transaction(func(tx *gorm.DB) error {
				return tx.Create(&Widget{Name: fault.name + "-tx"}).Error
			})
			if !errors.Is(err, flypg.ErrReplicationTimeout) || !errors.As(err, &re) {
				t.Errorf("Transaction with replication broken: %v, want a *ReplicationError", err)
			}
			if countRows(t, e.plain, "widgets", "name = ?", fault.name+"-tx") != 1 {
				t.Error("the timed-out transaction is not on the primary")
			}
			out, err := transferFn.Call(ctx, e.replica, transferIn{From: alice.ID, To: bob.ID, Amount: 1})
			if !errors.Is(err, flypg.ErrReplicationTimeout) {
				t.Errorf("Call with replication broken: %v, want ErrReplicationTimeout", err)
			}
			if out.ToBalance != fault.transferred {
				t.Errorf("Call's output with the replication error: %+v", out)
			}

			t.Run("UsePrimary writing SELECT waits", func(t *testing.T) {
				// clauses.go recommends UsePrimary for "reads with side
				// effects (nextval, a writing function)", and a write
				// through the primary "waits for replication as usual".
				var count int
				err := e.replica.Clauses(flypg.UsePrimary).Raw("SELECT bump_widget(?)", "bumped").Scan(&count).Error
				if err == nil {
					var local Widget
					ok(t, e.replica.Where("name = ?", "bumped").First(&local))
					t.Fatalf("db.Clauses(flypg.UsePrimary).Raw(\"SELECT writing_fn()\") is not awaited: it returned no error with replication broken, and the next local read sees count %d, not %d", local.Count, count)
				}
				if !errors.Is(err, flypg.ErrReplicationTimeout) {
					t.Fatalf("UsePrimary writing SELECT: %v", err)
				}
			})

			noErr(t, fault.heal())
			healed = true
			testkit.Eventually(t, 30*time.Second, func() bool {
				return countRows(t, e.replica, "widgets", "name LIKE ?", fault.name+"-%") == 4
			}, "the replica to catch up")
			wantBalances(t, e.replica, &alice, &bob, 100-fault.transferred, fault.transferred)

			// The tracker recovered: the next write waits and succeeds.
			after := Widget{Name: fault.name + "-after"}
			var rpcs uint64
			rpcs, waits = e.counted(func() { ok(t, e.replica.Create(&after)) })
			if rpcs != 1 || waits != 1 {
				t.Errorf("write after recovery: %d round trips, %d waits; want 1 and 1", rpcs, waits)
			}
			if countRows(t, e.replica, "widgets", "id = ?", after.ID) != 1 {
				t.Fatal("write after recovery not read back")
			}
		})
	}
}
