package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestFaultPrimaryRestart stops the primary (fast shutdown) and starts it
// again, then kills it (SIGKILL, crash recovery) and starts it again, while
// the executor and the replica-region app keep running. Interactive
// forwarded transactions open at that moment fail cleanly — at their next
// statement or at COMMIT, with a typed error — and none of their rows is on
// the primary. Writes while the primary is down fail with typed errors and,
// unless in doubt, write nothing. Once it is back the executor's pool
// recovers on its own: writes succeed again and its health is SERVING,
// without restarting anything.
func TestFaultPrimaryRestart(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1})
	e := newFaultEnv(t, faultConfig{cluster: c, rpcTimeout: 3 * time.Second})
	e.mustWrite("before")
	ctx := context.Background()
	primary := c.Primary

	for _, fault := range []struct {
		name string
		down func(context.Context) error
	}{
		{"stop", primary.Stop},
		{"kill", func(context.Context) error { return primary.Kill() }},
	} {
		t.Run(fault.name, func(t *testing.T) {
			e := e.at(t)
			e.reopenPlain() // the previous restart killed its connections
			p := fault.name
			// Two open transactions: one will try another statement, the
			// other goes straight to COMMIT.
			next := e.replica.Begin()
			noErr(t, next.Error)
			ok(t, next.Create(&faultWrite{Key: p + "-next-1"}))
			commit := e.replica.Begin()
			noErr(t, commit.Error)
			ok(t, commit.Create(&faultWrite{Key: p + "-commit-1"}))
			testkit.Eventually(t, 5*time.Second, func() bool {
				return e.activeOnPrimary("idle in transaction%", "") == 2
			}, "both transactions idle in transaction on the primary")

			noErr(t, fault.down(ctx))
			restarted := false
			defer func() {
				if !restarted {
					primary.Start(ctx)
				}
			}()
			// While it is down: typed errors; nothing written unless in
			// doubt.
			for i := 0; i < 3; i++ {
				key := fmt.Sprintf("%s-down-%d", p, i)
				err := e.write(ctx, key)
				switch classifyWrite(err) {
				case outcomeNotCommitted, outcomeInDoubt:
				default:
					t.Errorf("write %s with the primary down: %v, want a typed failure", key, err)
				}
				t.Logf("write with the primary down: %v", err)
			}
			noErr(t, primary.Start(ctx))
			restarted = true
			e.reopenPlain()

			err := next.Create(&faultWrite{Key: p + "-next-2"}).Error
			if err == nil {
				t.Errorf("statement of a transaction whose primary connection died: no error")
			} else if o := classifyWrite(err); o == outcomeUntyped {
				t.Errorf("statement of a transaction whose primary connection died: untyped error %v", err)
			}
			t.Logf("next statement: %v", err)
			next.Rollback()
			err = commit.Commit().Error
			if err == nil {
				t.Errorf("COMMIT of a transaction whose primary connection died: no error")
			} else if o := classifyWrite(err); o == outcomeUntyped {
				t.Errorf("COMMIT of a transaction whose primary connection died: untyped error %v", err)
			}
			t.Logf("commit: %v", err)
			// "conn closed" is pgconn's refusal to use a connection it
			// already knows is dead: COMMIT was never sent.
			var falseDoubt error
			if errors.Is(err, forward.ErrInDoubt) && strings.Contains(err.Error(), "conn closed") {
				falseDoubt = err
			}
			for _, k := range []string{"-next-1", "-next-2", "-commit-1"} {
				if n := e.onPrimary(p + k); n != 0 {
					t.Errorf("%s of a broken transaction is on the primary (%d rows)", p+k, n)
				}
			}
			for i := 0; i < 3; i++ {
				if key := fmt.Sprintf("%s-down-%d", p, i); e.onPrimary(key) > 1 {
					t.Errorf("%s is on the primary twice", key)
				}
			}

			// The executor's pool recovers by itself.
			recovered := time.Now()
			for i := 0; ; i++ {
				key := fmt.Sprintf("%s-recover-%d", p, i)
				err := e.write(ctx, key)
				if err == nil {
					break
				}
				switch classifyWrite(err) {
				case outcomeNotCommitted:
					if e.onPrimary(key) != 0 {
						t.Errorf("write %s failed with %v but is on the primary", key, err)
					}
				case outcomeInDoubt, outcomeCommitted:
				default:
					t.Fatalf("write %s after the restart: untyped error %v", key, err)
				}
				if time.Since(recovered) > 20*time.Second {
					t.Fatalf("writes still fail 20s after the primary came back: %v", err)
				}
			}
			t.Logf("writes succeed %s after the primary came back", time.Since(recovered).Round(time.Millisecond))
			for i := 0; i < 5; i++ {
				e.mustWrite(fmt.Sprintf("%s-after-%d", p, i))
			}
			e.healthy(p)
			// A transaction works too.
			ok(t, e.replica.Exec("SELECT 1"))
			noErr(t, e.replica.Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&faultWrite{Key: p + "-tx-a"}).Error; err != nil {
					return err
				}
				return tx.Create(&faultWrite{Key: p + "-tx-b"}).Error
			}))
			if e.onPrimaryLike(p+"-tx-%") != 2 {
				t.Error("the transaction after recovery is not on the primary")
			}
			if falseDoubt != nil {
				t.Fatalf("COMMIT of a forwarded transaction whose primary connection died before COMMIT was sent is reported as forward.ErrInDoubt (\"may have committed\") instead of a rollback: %v. "+
					"pgconn refused to send COMMIT on a connection it knew was closed (\"conn closed\", a connLockError whose SafeToRetry() is true), yet forward/service_tx.go txRun.commit records the unit as unknown for every non-PostgreSQL error of Executor.commit", falseDoubt)
			}
		})
	}
}

// TestFaultExecutorProcessKilled runs cmd/flypg-executor as a process of
// its own, opens forwarded transactions through it (written to, not
// committed) and a slow autocommit statement, and SIGKILLs it. The primary
// rolls the transactions back: no connection of that executor stays
// "idle in transaction" and none of their rows commits. Their COMMIT fails
// with a typed error. The statement that was running had been sent whole
// (with its Sync), so PostgreSQL finishes and commits it; the client,
// which lost the reply and the executor that knew, says ErrInDoubt — never
// "not committed" — and the row is indeed there. A new executor process on
// the same address then serves the same app.
func TestFaultExecutorProcessKilled(t *testing.T) {
	t.Parallel()
	bin := buildExecutor(t)
	e := newFaultEnv(t, faultConfig{rpcTimeout: 3 * time.Second})
	appName := "flypgproc_" + e.dbname
	// Room for the open transactions and the statement (the default
	// pool has max(4, CPUs) connections, which bounds the units too).
	dsn := e.cluster.Primary.DSN(e.dbname) + "&application_name=" + appName + "&pool_max_conns=8"
	proc := startExecutorProcess(t, bin, dsn, "127.0.0.1:0")
	app, _ := e.replicaApp(proc.addr)
	if err := app.Create(&faultWrite{Key: "proc-first"}).Error; err != nil {
		t.Fatalf("write through the executor process: %v\n%s", err, proc.Log())
	}
	activity := func(state, query string) int64 { return faultActivity(t, e.plain, appName, state, query) }

	const open = 4
	var txs []*gorm.DB
	for i := 0; i < open; i++ {
		tx := app.Begin()
		noErr(t, tx.Error)
		ok(t, tx.Create(&faultWrite{Key: fmt.Sprintf("proc-tx-%d-a", i)}))
		ok(t, tx.Create(&faultWrite{Key: fmt.Sprintf("proc-tx-%d-b", i)}))
		txs = append(txs, tx)
	}
	slow := make(chan error, 1)
	go func() {
		slow <- app.Exec("INSERT INTO fault_writes (key) SELECT 'proc-slow' FROM pg_sleep(1.5)").Error
	}()
	if !testkit.Poll(10*time.Second, func() bool {
		return activity("idle in transaction%", "") == open && faultSleeping(t, e.plain, appName, "pg_sleep(1.5)") == 1
	}) {
		var rows []map[string]any
		e.plain.Raw("SELECT application_name, state, query FROM pg_stat_activity WHERE datname = ?", e.dbname).Scan(&rows)
		t.Fatalf("the transactions and the statement are not on the primary after 10s: %d idle in transaction, %d sleeping; %v",
			activity("idle in transaction%", ""), faultSleeping(t, e.plain, appName, "pg_sleep(1.5)"), rows)
	}

	proc.Kill(t)
	if !testkit.Poll(10*time.Second, func() bool { return activity("idle in transaction%", "") == 0 }) {
		t.Fatalf("the primary did not roll back the killed executor's transactions within 10s: %d still idle in transaction", activity("idle in transaction%", ""))
	}
	if n := e.onPrimaryLike("proc-tx-%"); n != 0 {
		t.Fatalf("%d rows of the killed executor's open transactions committed", n)
	}
	// COMMIT of each (at once: each may take up to RPCTimeout to settle
	// by request ID with an executor that is gone).
	commitErrs := make([]error, len(txs))
	var wg sync.WaitGroup
	for i, tx := range txs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			commitErrs[i] = tx.Commit().Error
		}()
	}
	wg.Wait()
	for i, err := range commitErrs {
		t.Logf("COMMIT %d after the kill: %v", i, err)
		switch classifyWrite(err) {
		case outcomeNotCommitted:
			// It says rolled back: it must be.
			if n := e.onPrimaryLike(fmt.Sprintf("proc-tx-%d-%%", i)); n != 0 {
				t.Errorf("COMMIT %d says nothing committed, but %d rows are there", i, n)
			}
		case outcomeInDoubt:
		default:
			t.Errorf("COMMIT %d after the executor was killed: %v, want a typed failure", i, err)
		}
	}

	err := <-slow
	if !errors.Is(err, forward.ErrInDoubt) || flypg.SafeToRetry(err) {
		t.Errorf("statement running when its executor was killed: %v, want ErrInDoubt", err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return activity("%", "pg_sleep(1.5)") == 0
	}, "the orphaned statement to finish on the primary")
	if n := e.onPrimary("proc-slow"); n != 1 {
		t.Errorf("the statement sent whole before the kill: %d rows, want 1 (PostgreSQL commits it; the client said in doubt)\n%s", n, e.cluster.Primary.LogTail(30))
	}
	if n := e.onPrimaryLike("proc-tx-%"); n != 0 {
		t.Fatalf("%d rows of the killed executor's open transactions committed", n)
	}

	// A new process on the same address: the app carries on.
	proc2 := startExecutorProcess(t, bin, dsn, proc.addr)
	if !testkit.Poll(10*time.Second, func() bool {
		return app.Create(&faultWrite{Key: fmt.Sprintf("proc-again-%d", time.Now().UnixNano())}).Error == nil
	}) {
		t.Fatalf("no write through the new executor process within 10s; its log: %s", proc2.Log())
	}
	ok(t, app.Create(&faultWrite{Key: "proc-last"}))

	// The transactions' streams had broken before COMMIT was sent (its
	// Send returned io.EOF: gRPC did not transmit it), so the client can
	// know they were rolled back.
	t.Run("COMMIT after the kill is reported as rolled back", func(t *testing.T) {
		for i, err := range commitErrs {
			if errors.Is(err, forward.ErrInDoubt) {
				t.Fatalf("COMMIT %d of a transaction whose stream broke before COMMIT was sent (the executor process was SIGKILLed) waits out the whole RPCTimeout and returns forward.ErrInDoubt instead of ErrTxAborted: %v. "+
					"forward/tx.go clientTx.Commit sends COMMIT on the broken stream, gets io.EOF from gRPC (the message was not transmitted), and still settles it by request ID; with the executor gone Resolve cannot answer", i, err)
			}
			if !errors.Is(err, forward.ErrTxAborted) {
				t.Errorf("COMMIT %d after the kill: %v, want ErrTxAborted", i, err)
			}
		}
	})
}
