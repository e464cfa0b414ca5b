package integration

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/pgtest"
)

// concurrentWrites runs n writes of keys prefix-0..n-1 at once through e's
// replica-region app and returns their errors and durations.
func concurrentWrites(e *faultEnv, prefix string, n int) ([]error, []time.Duration) {
	errs := make([]error, n)
	took := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = e.write(context.Background(), fmt.Sprintf("%s-%d", prefix, i))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	return errs, took
}

// TestFaultReplicationStalled slows the replica's replication stream down
// (4s of round-trip time) and then cuts it, with AwaitTimeout 500ms:
// concurrent writes commit on the primary and their waits end with
// flypg.ErrReplicationTimeout (a *ReplicationError that says it committed)
// within the timeout, never hanging. Once replication resumes, the tracker
// recovers: the replica catches up and the next write waits normally and
// succeeds, read back locally.
func TestFaultReplicationStalled(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1, ReplicationLinks: true})
	const await = 500 * time.Millisecond
	e := newFaultEnv(t, faultConfig{cluster: c, awaitTimeout: await})
	e.mustWrite("before")
	link := c.ReplicationLink(0)

	for _, fault := range []struct {
		name      string
		brk, heal func() error
	}{
		{"latency", func() error { return link.SetRTT(4 * time.Second) }, func() error { return link.SetRTT(0) }},
		{"cut", link.Cut, link.Restore},
	} {
		t.Run(fault.name, func(t *testing.T) {
			e := e.at(t)
			noErr(t, fault.brk())
			healed := false
			defer func() {
				if !healed {
					fault.heal()
				}
			}()
			const writers = 8
			errs, took := concurrentWrites(e, fault.name, writers)
			for i, err := range errs {
				key := fmt.Sprintf("%s-%d", fault.name, i)
				var re *flypg.ReplicationError
				if !errors.Is(err, flypg.ErrReplicationTimeout) || !errors.As(err, &re) || !re.Committed() || re.LSN == 0 {
					t.Errorf("write %s with replication stalled: %v, want a committed *ReplicationError", key, err)
				}
				if took[i] < await || took[i] > await+3*time.Second {
					t.Errorf("write %s returned after %s with AwaitTimeout %s", key, took[i].Round(time.Millisecond), await)
				}
				if n := e.onPrimary(key); n != 1 {
					t.Errorf("write %s reported committed has %d rows on the primary", key, n)
				}
			}
			if n := countRows(t, e.replica, "fault_writes", "key LIKE ?", fault.name+"-%"); n != 0 {
				t.Errorf("the replica shows %d rows although replication is stalled", n)
			}

			noErr(t, fault.heal())
			healed = true
			testkit.Eventually(t, 30*time.Second, func() bool {
				return countRows(t, e.replica, "fault_writes", "key LIKE ?", fault.name+"-%") == writers
			}, "the replica to catch up")
			// The tracker recovered: the next write waits once and succeeds.
			before := e.rPlug.Stats().Tracker
			start := time.Now()
			e.mustWrite(fault.name + "-after")
			if d := time.Since(start); d >= await {
				t.Errorf("write after recovery took %s", d)
			}
			if after := e.rPlug.Stats().Tracker; after.Waits-before.Waits != 1 {
				t.Errorf("write after recovery: %d waits, want 1", after.Waits-before.Waits)
			}
		})
	}
}

// TestFaultLocalReplicaRestart stops the replica-region app's local
// replica, then starts it again, with DisableReplicaFallback (see
// TestAvailReplicaDown for the default). While it is down, local reads fail at
// once with a connection error (no hang); forwarded writes still commit on
// the primary and their waits end with ErrReplicationTimeout, saying why
// (the tracker's failed looks); the tracker backs off — a few looks over
// seconds of outage with 16 concurrent writers, not a busy loop — and the
// number of goroutines stays bounded. Once the replica is back, reads work,
// the tracker recovers and writes wait and succeed again, without
// restarting the app. It is not parallel: it counts the process's
// goroutines.
func TestFaultLocalReplicaRestart(t *testing.T) {
	c := ownCluster(t, pgtest.Options{Replicas: 1})
	const await = time.Second
	e := newFaultEnv(t, faultConfig{cluster: c, awaitTimeout: await, plugin: func(c *flypg.Config) { c.DisableReplicaFallback = true }})
	e.mustWrite("before")
	ctx := context.Background()
	replica := c.Replicas[0]

	noErr(t, replica.Stop(ctx))
	restarted := false
	defer func() {
		if !restarted {
			replica.Start(ctx)
		}
	}()

	// Reads fail clearly and at once.
	start := time.Now()
	var got []faultWrite
	err := e.replica.Find(&got).Error
	if err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("read with the local replica down: %v, want a connection error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("read with the local replica down took %s", d)
	}

	// Concurrent writers during the outage.
	const writers, outage = 16, 3 * time.Second
	baseline := runtime.NumGoroutine()
	looks := e.rPlug.Stats().Tracker.Looks
	watch := watchGoroutines()
	var mu sync.Mutex
	var outcomes []error
	var keys []string
	var wg sync.WaitGroup
	stopAt := time.Now().Add(outage)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stopAt); i++ {
				key := fmt.Sprintf("down-%d-%d", w, i)
				err := e.write(ctx, key)
				mu.Lock()
				outcomes, keys = append(outcomes, err), append(keys, key)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	peak := watch.Peak()
	looksDuring := e.rPlug.Stats().Tracker.Looks - looks
	t.Logf("outage: %d writes, %d tracker looks, goroutines %d -> peak %d", len(outcomes), looksDuring, baseline, peak)
	if looksDuring == 0 || looksDuring >= 100 {
		t.Errorf("%d tracker looks during a %s outage with %d writers waiting; want a few (backing off), not 0 and not a busy loop", looksDuring, outage, writers)
	}
	if peak > baseline+writers*20+200 {
		t.Errorf("goroutines peaked at %d (from %d) with %d writers", peak, baseline, writers)
	}
	for i, err := range outcomes {
		var re *flypg.ReplicationError
		if !errors.Is(err, flypg.ErrReplicationTimeout) || !errors.As(err, &re) || !strings.Contains(err.Error(), "last look failed") {
			t.Errorf("write %s with the local replica down: %v, want ErrReplicationTimeout saying why", keys[i], err)
			continue
		}
		if n := e.onPrimary(keys[i]); n != 1 {
			t.Errorf("write %s reported committed has %d rows on the primary", keys[i], n)
		}
	}

	noErr(t, replica.Start(ctx))
	restarted = true
	testkit.Eventually(t, 20*time.Second, func() bool {
		return e.write(ctx, fmt.Sprintf("recover-%d", time.Now().UnixNano())) == nil
	}, "writes to wait and succeed again")
	e.mustWrite("after")
	if n := countRows(t, e.replica, "fault_writes", "key LIKE 'down-%'"); n != int64(len(outcomes)) {
		t.Errorf("the replica shows %d of the %d writes made while it was down", n, len(outcomes))
	}
	if !testkit.Poll(10*time.Second, func() bool { return runtime.NumGoroutine() <= baseline+20 }) {
		t.Fatalf("goroutines did not settle within 10s: %d, baseline %d", runtime.NumGoroutine(), baseline)
	}
}

// TestFaultReplicaPromoted promotes the replica-region app's local replica,
// with DisableFollowPromotion and MaxReplicaLag off (TestAvailLocalPromoted
// has the default), while writers wait for it (replication cut, AwaitTimeout 30s): every
// waiter returns at once, well before the timeout, with a
// *ReplicationError wrapping lsn.ErrPromoted whose message says the local
// database was promoted — not a timeout, and not a hang. The writes
// committed on the primary. Later writes fail the same way, immediately.
func TestFaultReplicaPromoted(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1, ReplicationLinks: true})
	const await = 30 * time.Second
	e := newFaultEnv(t, faultConfig{cluster: c, awaitTimeout: await, plugin: func(c *flypg.Config) {
		c.MaxReplicaLag, c.DisableFollowPromotion = -1, true
	}})
	e.mustWrite("before")
	ctx := context.Background()

	noErr(t, c.ReplicationLink(0).Cut())
	const writers = 6
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, writers)
	for i := 0; i < writers; i++ {
		go func() {
			start := time.Now()
			err := e.write(ctx, fmt.Sprintf("waiting-%d", i))
			results <- result{err, time.Since(start)}
		}()
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return e.rPlug.Stats().Tracker.Waiting == writers
	}, "the writers to wait for replication")
	promoted := time.Now()
	noErr(t, c.Replicas[0].Promote(ctx))
	check := func(what string, err error) {
		t.Helper()
		var re *flypg.ReplicationError
		if !errors.Is(err, lsn.ErrPromoted) || !errors.As(err, &re) || !re.Committed() {
			t.Errorf("%s on a promoted replica: %v, want a *ReplicationError wrapping lsn.ErrPromoted", what, err)
			return
		}
		if errors.Is(err, flypg.ErrReplicationTimeout) {
			t.Errorf("%s: promotion is reported as a timeout: %v", what, err)
		}
		if !strings.Contains(err.Error(), "promoted") {
			t.Errorf("%s: the error does not say the replica was promoted: %v", what, err)
		}
	}
	for i := 0; i < writers; i++ {
		select {
		case r := <-results:
			check("waiting write", r.err)
		case <-time.After(10 * time.Second):
			t.Fatalf("a waiter still hangs 10s after the promotion (AwaitTimeout %s)", await)
		}
	}
	t.Logf("waiters released %s after the promotion began", time.Since(promoted).Round(time.Millisecond))
	if n := e.onPrimaryLike("waiting-%"); n != writers {
		t.Errorf("%d of %d writes on the primary", n, writers)
	}
	start := time.Now()
	check("write after the promotion", e.write(ctx, "after"))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("write after the promotion took %s", d)
	}
	if e.onPrimary("after") != 1 {
		t.Error("the write after the promotion is not on the primary")
	}
}
