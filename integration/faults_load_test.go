package integration

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/pgtest"
)

// loadResult is what a wave of concurrent writers saw.
type loadResult struct {
	errs           []error
	tally          map[outcome]int
	busy           int
	peakGoroutines int
	peakHeap       uint64
	baseGoroutines int
	baseHeap       uint64
	took           time.Duration
}

// memWatch samples the heap (and stacks) in use until stopped.
type memWatch struct {
	stop chan struct{}
	done chan uint64
}

func watchMemory() *memWatch {
	w := &memWatch{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var peak uint64
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse+m.StackInuse)
			select {
			case <-w.stop:
				w.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *memWatch) Peak() uint64 {
	close(w.stop)
	return <-w.done
}

// writeWave starts n writers at once, each writing one key prefix-i
// through e's replica-region app, and checks every outcome against the
// primary: acknowledged writes are there exactly once, writes refused as
// not committed are absent, nothing is untyped and no key is duplicated.
func writeWave(t *testing.T, e *faultEnv, prefix string, n int) loadResult {
	t.Helper()
	r := loadResult{errs: make([]error, n), tally: map[outcome]int{}}
	r.baseGoroutines, r.baseHeap = runtime.NumGoroutine(), heapInUse()
	gw, mw := watchGoroutines(), watchMemory()
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := 0; i < n; i++ {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			r.errs[i] = e.write(context.Background(), fmt.Sprintf("%s-%d", prefix, i))
		}()
	}
	ready.Wait()
	begin := time.Now()
	close(start)
	done.Wait()
	r.took = time.Since(begin)
	r.peakGoroutines, r.peakHeap = gw.Peak(), mw.Peak()

	type keyCount struct {
		Key string
		N   int64
	}
	var rows []keyCount
	ok(t, e.plain.Raw(`SELECT key, count(*) AS n FROM fault_writes WHERE key LIKE ? GROUP BY key`, prefix+"-%").Scan(&rows))
	counts := map[string]int64{}
	for _, row := range rows {
		counts[row.Key] = row.N
		if row.N > 1 {
			t.Errorf("DUPLICATE: %s is on the primary %d times", row.Key, row.N)
		}
	}
	for i, err := range r.errs {
		key := fmt.Sprintf("%s-%d", prefix, i)
		o := classifyWrite(err)
		r.tally[o]++
		if errors.Is(err, forward.ErrBusy) {
			r.busy++
			if !flypg.SafeToRetry(err) {
				t.Errorf("%s: ErrBusy is not safe to retry: %v", key, err)
			}
		}
		switch o {
		case outcomeOK, outcomeCommitted:
			if counts[key] != 1 {
				t.Errorf("%s acknowledged (%v) but %d rows on the primary", key, err, counts[key])
			}
		case outcomeNotCommitted:
			if counts[key] != 0 {
				t.Errorf("%s failed with %v (not committed) but is on the primary", key, err)
			}
		case outcomeInDoubt:
			t.Logf("%s in doubt (%d rows): %v", key, counts[key], err)
		default:
			t.Errorf("%s: untyped error %v", key, err)
		}
	}
	t.Logf("%d writers in %s: %v (busy %d); goroutines %d -> peak %d; heap+stacks %d MiB -> peak %d MiB",
		n, r.took.Round(time.Millisecond), r.tally, r.busy, r.baseGoroutines, r.peakGoroutines, r.baseHeap>>20, r.peakHeap>>20)
	return r
}

// TestFaultLoadWriters runs 1,000 concurrent forwarded writers through one
// replica-region plugin: first against an executor with room for them
// (all succeed, each exactly once, read-your-writes), then against one
// limited to 4 units at once with a 5ms queue: some writes are refused
// with forward.ErrBusy (safe to retry, nothing written), the rest succeed,
// nothing collapses, and the executor serves normally right after.
// Goroutines and memory stay bounded during the waves, and once the
// plugins are closed and the cluster stopped, no goroutine is left behind.
func TestFaultLoadWriters(t *testing.T) {
	requireCluster(t)
	leaks := faultLeakOptions()
	const writers = 1000
	t.Run("run", func(t *testing.T) {
		c := pgtest.StartT(t, pgtest.Options{Replicas: 1})
		t.Run("all served", func(t *testing.T) {
			e := newFaultEnv(t, faultConfig{
				cluster: c, dsnParams: "pool_max_conns=16",
				rpcTimeout: 60 * time.Second, awaitTimeout: 30 * time.Second,
				executor: flypg.ExecutorConfig{QueueTimeout: 60 * time.Second},
			})
			e.mustWrite("warm-up")
			r := writeWave(t, e, "wave", writers)
			if r.tally[outcomeOK] != writers {
				t.Errorf("%d of %d writes succeeded with room for all: %v", r.tally[outcomeOK], writers, r.tally)
			}
			if r.peakGoroutines > r.baseGoroutines+writers*5+500 {
				t.Errorf("goroutines peaked at %d for %d writers (from %d)", r.peakGoroutines, writers, r.baseGoroutines)
			}
			if r.peakHeap > r.baseHeap+256<<20 {
				t.Errorf("heap and stacks grew by %d MiB for %d writers", (r.peakHeap-r.baseHeap)>>20, writers)
			}
			if n := countRows(t, e.replica, "fault_writes", "key LIKE 'wave-%'"); n != writers {
				t.Errorf("the replica shows %d of %d acknowledged writes", n, writers)
			}
		})
		t.Run("back-pressure", func(t *testing.T) {
			e := newFaultEnv(t, faultConfig{
				cluster:  c,
				executor: flypg.ExecutorConfig{MaxConcurrent: 4, QueueTimeout: 5 * time.Millisecond},
			})
			e.mustWrite("warm-up")
			r := writeWave(t, e, "busy", writers)
			if r.busy == 0 || r.tally[outcomeOK] == 0 {
				t.Errorf("with 4 slots and a 5ms queue, %d busy and %d served of %d; want some of each", r.busy, r.tally[outcomeOK], writers)
			}
			if r.busy+r.tally[outcomeOK] != writers {
				t.Errorf("outcomes other than success or ErrBusy: %v", r.tally)
			}
			if r.peakGoroutines > r.baseGoroutines+writers*5+500 {
				t.Errorf("goroutines peaked at %d for %d writers (from %d)", r.peakGoroutines, writers, r.baseGoroutines)
			}
			// Right after: healthy, and serving every write again.
			e.healthy("after the burst")
			for i := 0; i < 20; i++ {
				e.mustWrite(fmt.Sprintf("calm-%d", i))
			}
		})
	})
	goleak.VerifyNone(t, leaks...)
}

// TestFaultLoadWaiters puts 100,000 concurrent waiters on one lsn.Tracker
// over a real replica whose replication is cut, so that none can be
// released early; when replication is restored, every one of them is
// released, with nothing but the tracker's few looks. Memory per waiter is
// bounded, and after Close no goroutine is left behind.
func TestFaultLoadWaiters(t *testing.T) {
	requireCluster(t)
	leaks := faultLeakOptions()
	waiters := 100_000
	t.Run("run", func(t *testing.T) {
		c := pgtest.StartT(t, pgtest.Options{Replicas: 1, ReplicationLinks: true})
		primary := openGORM(t, c.Primary.DSN(""))
		replica := openGORM(t, c.Replicas[0].DSN(""))
		sqlDB, err := replica.DB()
		noErr(t, err)
		src := lsn.NewReplaySource(sqlDB)
		tracker, err := lsn.NewTracker(lsn.Config{Source: src, Timeout: 2 * time.Minute})
		noErr(t, err)
		closed := false
		t.Cleanup(func() {
			if !closed {
				tracker.Close()
			}
			src.Close()
		})
		ok(t, primary.Exec("CREATE TABLE waited (id serial PRIMARY KEY, v text)"))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		noErr(t, c.WaitReplicated(ctx))
		cancel()

		link := c.ReplicationLink(0)
		noErr(t, link.Cut())
		ok(t, primary.Exec("INSERT INTO waited (v) VALUES ('x')"))
		var text string
		ok(t, primary.Raw("SELECT pg_current_wal_insert_lsn()::text").Scan(&text))
		target, err := lsn.Parse(text)
		noErr(t, err)

		baseHeap, baseG := heapInUse(), runtime.NumGoroutine()
		var released atomic.Int64
		var mu sync.Mutex
		var failures []error
		var wg sync.WaitGroup
		for i := 0; i < waiters; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := tracker.Wait(context.Background(), target); err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				released.Add(1)
			}()
		}
		if !testkit.Poll(2*time.Minute, func() bool { return tracker.Stats().Waiting == waiters }) {
			mu.Lock()
			defer mu.Unlock()
			msg := fmt.Sprintf("%d waiting, %d failed", tracker.Stats().Waiting, len(failures))
			if len(failures) > 0 {
				msg += fmt.Sprintf(" (the first: %v)", failures[0])
			}
			t.Fatalf("not every waiter waits after 2m: %s", msg)
		}
		if released.Load() != 0 {
			t.Fatalf("%d waiters released although replication is cut", released.Load())
		}
		heap := heapInUse()
		perWaiter := (int64(heap) - int64(baseHeap)) / int64(waiters)
		t.Logf("%d waiters: heap+stacks %d MiB -> %d MiB (%d bytes per waiter), goroutines %d -> %d",
			waiters, baseHeap>>20, heap>>20, perWaiter, baseG, runtime.NumGoroutine())
		if perWaiter > 16<<10 {
			t.Errorf("%d bytes per waiter, want at most 16 KiB (its goroutine and its entry)", perWaiter)
		}

		looks := tracker.Stats().Looks
		restored := time.Now()
		noErr(t, link.Restore())
		finished := make(chan struct{})
		go func() { wg.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(time.Minute):
			t.Fatalf("%d of %d waiters released a minute after replication resumed", released.Load(), waiters)
		}
		st := tracker.Stats()
		t.Logf("all released %s after replication was restored, with %d looks; stats %+v", time.Since(restored).Round(time.Millisecond), st.Looks-looks, st)
		if len(failures) > 0 {
			t.Fatalf("%d waits failed, e.g. %v", len(failures), failures[0])
		}
		if released.Load() != int64(waiters) || st.MaxWaiting != waiters || st.Waiting != 0 || st.Replayed < target {
			t.Fatalf("released %d of %d; stats %+v", released.Load(), waiters, st)
		}
		closed = true
		noErr(t, tracker.Close())
		if err := tracker.Wait(context.Background(), target+1<<20); !errors.Is(err, lsn.ErrClosed) {
			t.Fatalf("Wait after Close: %v, want ErrClosed", err)
		}
	})
	goleak.VerifyNone(t, leaks...)
}
