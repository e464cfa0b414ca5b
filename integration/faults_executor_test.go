package integration

import (
	"context"
	"database/sql/driver"
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
)

// TestFaultExecutorUnreachable cuts the link between the replica-region app
// and the executor, black-holes it, and stops the executor for real. While
// it cannot be reached, every kind of write (GORM's one-statement
// transaction, raw Exec, a multi-statement Transaction) fails within the
// connect wait with forward.ErrUnavailable (safe to retry, matching
// driver.ErrBadConn), naming the executor's address, and writes nothing;
// reads on the local replica keep working. When the link is restored, or a
// new executor serves on the same address, writes resume on the same
// *gorm.DB without restarting anything. A black hole (the request is sent
// and vanishes) is reported as in doubt within RPCTimeout, never as a
// success or as "not sent".
func TestFaultExecutorUnreachable(t *testing.T) {
	t.Parallel()
	const rpcTimeout = 5 * time.Second
	e := newFaultEnv(t, faultConfig{link: true, rpcTimeout: rpcTimeout})
	e.mustWrite("before")
	// A second replica-region app dials the executor directly: it shows
	// that a cut link breaks only the path through it.
	direct, dPlug := e.replicaApp(e.execAddr)

	// down checks that every kind of write through each app fails as "not
	// sent" and quickly, and that nothing of it reached the primary. The
	// writes run at once: each waits for its connect timeout.
	type downApp struct {
		db          *gorm.DB
		plug        *flypg.Plugin
		target, key string
	}
	down := func(t *testing.T, apps ...downApp) {
		t.Helper()
		e := e.at(t)
		// A write sent on a connection the app has not yet seen close is
		// honestly in doubt; "not sent" is promised once the app knows.
		for _, a := range apps {
			testkit.Eventually(t, 5*time.Second, func() bool {
				return !a.plug.Stats().Forward.Connected
			}, "the app notices it lost the executor")
		}
		type attempt struct {
			app   downApp
			name  string
			run   func() error
			bound time.Duration
			err   error
			took  time.Duration
		}
		var attempts []*attempt
		for _, a := range apps {
			db, key := a.db, a.key
			attempts = append(attempts,
				&attempt{app: a, name: "Create", run: func() error { return db.Create(&faultWrite{Key: key + "-create"}).Error }, bound: forward.DefaultConnectWait},
				// database/sql retries a never-sent statement on two more
				// connections (driver.ErrBadConn), each bounded by the
				// connect wait.
				&attempt{app: a, name: "Exec", run: func() error {
					return db.Exec("INSERT INTO fault_writes (key) VALUES (?)", key+"-exec").Error
				}, bound: 3 * forward.DefaultConnectWait},
				&attempt{app: a, name: "Transaction", run: func() error {
					return db.Transaction(func(tx *gorm.DB) error {
						if err := tx.Create(&faultWrite{Key: key + "-tx1"}).Error; err != nil {
							return err
						}
						return tx.Create(&faultWrite{Key: key + "-tx2"}).Error
					})
				}, bound: forward.DefaultConnectWait})
		}
		var wg sync.WaitGroup
		for _, a := range attempts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				a.err = a.run()
				a.took = time.Since(start)
			}()
		}
		wg.Wait()
		for _, a := range attempts {
			what := a.app.key + " " + a.name
			err := a.err
			if !errors.Is(err, forward.ErrUnavailable) || !errors.Is(err, flypg.ErrUnavailable) {
				t.Errorf("%s with the executor unreachable: %v, want forward.ErrUnavailable", what, err)
				continue
			}
			var fe *forward.Error
			if !errors.As(err, &fe) || fe.Target != a.app.target || !strings.Contains(err.Error(), a.app.target) {
				t.Errorf("%s: the error does not name the executor %s: %v", what, a.app.target, err)
			}
			if !flypg.SafeToRetry(err) || !errors.Is(err, driver.ErrBadConn) {
				t.Errorf("%s: a never-sent write is not reported safe to retry: %v", what, err)
			}
			if slack := time.Second; a.took > a.bound+slack || a.took >= rpcTimeout {
				t.Errorf("%s failed after %s; the connect wait allows %s and RPCTimeout is %s", what, a.took.Round(time.Millisecond), a.bound, rpcTimeout)
			}
		}
		for _, a := range apps {
			if n := e.onPrimaryLike(a.key + "-%"); n != 0 {
				t.Errorf("%d rows of never-sent writes are on the primary", n)
			}
			// Reads stay local and keep working.
			var got []faultWrite
			if err := a.db.Where("key = ?", "before").Find(&got).Error; err != nil || len(got) != 1 {
				t.Errorf("local read with the executor unreachable: %d rows, %v", len(got), err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}

	// resume writes through db until one succeeds, within a few seconds of
	// the executor becoming reachable again; the failures on the way must
	// be "not sent".
	resume := func(t *testing.T, db *gorm.DB, key string) {
		t.Helper()
		e := e.at(t)
		start := time.Now()
		for i := 0; ; i++ {
			k := fmt.Sprintf("%s-%d", key, i)
			err := db.Create(&faultWrite{Key: k}).Error
			if err == nil {
				if n := countRows(t, db, "fault_writes", "key = ?", k); n != 1 {
					t.Fatalf("resumed write %s: the replica shows %d rows, want 1", k, n)
				}
				break
			}
			if !errors.Is(err, forward.ErrUnavailable) {
				t.Fatalf("write %d while reconnecting: %v, want success or ErrUnavailable", i, err)
			}
			if e.onPrimary(k) != 0 {
				t.Fatalf("a write reported unavailable is on the primary: %v", err)
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("writes did not resume within 10s: %v", err)
			}
		}
		t.Logf("writes resumed after %s", time.Since(start).Round(time.Millisecond))
		for i := 0; i < 3; i++ {
			if err := db.Create(&faultWrite{Key: fmt.Sprintf("%s-after-%d", key, i)}).Error; err != nil {
				t.Fatalf("write after resuming: %v", err)
			}
		}
	}

	t.Run("link cut", func(t *testing.T) {
		e := e.at(t)
		noErr(t, e.link.Cut())
		defer e.link.Restore() // also when a check fails: later subtests need the link
		down(t, downApp{e.replica, e.rPlug, e.link.Addr(), "cut"})
		// The executor itself is fine: the direct path works.
		if err := direct.Create(&faultWrite{Key: "cut-direct"}).Error; err != nil {
			t.Fatalf("write on the direct path while the link is cut: %v", err)
		}
		noErr(t, e.link.Restore())
		resume(t, e.replica, "restored")
	})

	t.Run("ConnectWait bounds a unit", func(t *testing.T) {
		e := e.at(t)
		const wait = 300 * time.Millisecond
		c, err := forward.NewClient(forward.ClientConfig{Target: e.link.Addr(), Secret: testkit.Secret, Timeout: rpcTimeout, ConnectWait: wait})
		noErr(t, err)
		defer c.Close()
		noErr(t, c.Ping(context.Background()))
		noErr(t, e.link.Cut())
		defer e.link.Restore()
		testkit.Eventually(t, 5*time.Second, func() bool { return !c.Stats().Connected }, "the client notices the cut")
		for i := 0; i < 3; i++ {
			start := time.Now()
			_, _, err = c.Call(context.Background(), "nothing", nil)
			took := time.Since(start)
			if !errors.Is(err, forward.ErrUnavailable) {
				t.Fatalf("call through a cut link: %v, want ErrUnavailable", err)
			}
			if took > wait+700*time.Millisecond {
				t.Errorf("call through a cut link failed after %s with ConnectWait %s", took.Round(time.Millisecond), wait)
			}
		}
	})

	t.Run("black hole", func(t *testing.T) {
		e := e.at(t)
		// A ready connection first: into a black hole a new connection
		// never becomes ready, and that is "not sent".
		resume(t, e.replica, "before-hole")
		noErr(t, e.link.Blackhole())
		cleared := false
		defer func() {
			if !cleared {
				e.link.Clear()
			}
		}()
		start := time.Now()
		err := e.replica.Create(&faultWrite{Key: "hole"}).Error
		took := time.Since(start)
		// The request left on a ready connection and vanished: the client
		// cannot know, and must say so.
		if !errors.Is(err, forward.ErrInDoubt) || !strings.Contains(err.Error(), e.link.Addr()) {
			t.Fatalf("write into a black hole: %v, want ErrInDoubt naming %s", err, e.link.Addr())
		}
		if flypg.SafeToRetry(err) {
			t.Error("an in-doubt write is reported safe to retry")
		}
		if took < rpcTimeout-100*time.Millisecond || took > rpcTimeout+2*time.Second {
			t.Errorf("write into a black hole returned after %s, want about RPCTimeout %s", took.Round(time.Millisecond), rpcTimeout)
		}
		if e.onPrimary("hole") != 0 {
			t.Fatal("a write swallowed by the black hole reached the primary")
		}
		noErr(t, e.link.Clear())
		cleared = true
		resume(t, e.replica, "after-hole")
	})

	t.Run("executor stopped", func(t *testing.T) {
		e := e.at(t)
		e.stopExecutor()
		down(t, downApp{e.replica, e.rPlug, e.link.Addr(), "stopped-link"}, downApp{direct, dPlug, e.execAddr, "stopped-direct"})
		// A new executor process on the same address: both apps carry
		// on, without being restarted.
		e.restartExecutor()
		resume(t, e.replica, "new-executor-link")
		resume(t, direct, "new-executor-direct")
		e.healthy("after restart")
	})
}
