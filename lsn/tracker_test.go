package lsn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTracker(t *testing.T, cfg Config) *Tracker {
	t.Helper()
	tr, err := NewTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// waitAsync starts Wait in a goroutine and returns a channel with its result.
func waitAsync(ctx context.Context, tr *Tracker, target LSN) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- tr.Wait(ctx, target) }()
	return ch
}

func TestNewTrackerNeedsSource(t *testing.T) {
	if _, err := NewTracker(Config{}); err == nil {
		t.Fatal("NewTracker without a source succeeded")
	}
}

func TestNoLooksWithoutWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1100)
		tr := newTracker(t, Config{Source: src})

		time.Sleep(time.Hour)
		synctest.Wait()
		if n := src.count(); n != 0 {
			t.Fatalf("idle tracker looked %d times", n)
		}

		if err := tr.Wait(context.Background(), 1100); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		after := src.count()
		if after != 1 {
			t.Fatalf("one satisfied wait cost %d looks, want 1", after)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := src.count(); n != after {
			t.Fatalf("tracker kept looking after its waiters left: %d -> %d looks", after, n)
		}

		// A target the last look already covered costs no look at all.
		if err := tr.Wait(context.Background(), 1050); err != nil {
			t.Fatal(err)
		}
		if n := src.count(); n != after {
			t.Fatalf("cached wait looked: %d -> %d", after, n)
		}
		if s := tr.Stats(); s.CacheHits != 1 || s.Waits != 2 {
			t.Fatalf("stats = %+v, want 1 cache hit of 2 waits", s)
		}
	})
}

// looksToRelease runs n waiters for one target that replay reaches after
// delay, and returns how many looks it took to release them all.
func looksToRelease(t *testing.T, n int, delay time.Duration) int {
	var looks int
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1000)
		tr := newTracker(t, Config{Source: src})
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- tr.Wait(context.Background(), 2000)
			}()
		}
		time.Sleep(delay)
		src.set(2000)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		looks = src.count()
		if s := tr.Stats(); s.MaxWaiting != n {
			t.Errorf("MaxWaiting = %d, want %d", s.MaxWaiting, n)
		}
	})
	return looks
}

func TestOneLookServesAllWaiters(t *testing.T) {
	for _, delay := range []time.Duration{0, 3 * time.Millisecond, 200 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			one := looksToRelease(t, 1, delay)
			many := looksToRelease(t, 1000, delay)
			if one != many {
				t.Fatalf("looks depend on the number of waiters: 1 waiter %d looks, 1000 waiters %d looks", one, many)
			}
			t.Logf("replay after %v: %d looks", delay, one)
		})
	}
}

func TestScheduleFirstLookAtOnceThenBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1001)
		src.latency = 0
		sched := func(stalled time.Duration) time.Duration {
			// 10 ms, then 20 ms, 30 ms, ... : stalled grows by the pause itself.
			return stalled + 10*time.Millisecond
		}
		tr := newTracker(t, Config{Source: src, Schedule: sched, Timeout: -1})
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := tr.Wait(ctx, 1002)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		var got []time.Duration
		for _, at := range src.callTimes() {
			got = append(got, at.Sub(start))
		}
		// Looks at 0, then pauses of 10 (stalled 0), 20 (stalled 10), 40 (stalled 30).
		want := []time.Duration{0, 10 * time.Millisecond, 30 * time.Millisecond, 70 * time.Millisecond}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("looks at %v, want %v", got, want)
		}
	})
}

func TestProgressResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1001)
		src.latency = time.Millisecond
		// Pause equals the stall: looks grow apart while replay stands still.
		tr := newTracker(t, Config{Source: src, Schedule: func(s time.Duration) time.Duration { return s + time.Millisecond }, Timeout: -1})
		done := waitAsync(context.Background(), tr, 1100)
		time.Sleep(500 * time.Millisecond)
		advanced := time.Now()
		src.set(1050) // progress, but not enough
		time.Sleep(time.Second)
		// The first look after the advance sees it; the next look must come
		// 1 ms (+1 ms latency) later, not after a pause as long as the stall.
		var after []time.Time
		for _, at := range src.callTimes() {
			if at.After(advanced) {
				after = append(after, at)
			}
		}
		if len(after) < 2 {
			t.Fatalf("only %d looks in the second after replay advanced", len(after))
		}
		if gap := after[1].Sub(after[0]); gap > 2*time.Millisecond {
			t.Fatalf("look after an advance came %v later; the schedule did not restart", gap)
		}
		src.set(1100)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestCancelledWaiterRemovedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1001)
		tr := newTracker(t, Config{Source: src, Timeout: -1})
		ctx, cancel := context.WithCancel(context.Background())
		done := waitAsync(ctx, tr, 1010)
		keep := waitAsync(context.Background(), tr, 1010)
		synctest.Wait()
		if s := tr.Stats(); s.Waiting != 2 {
			t.Fatalf("waiting = %d, want 2", s.Waiting)
		}
		cancel()
		err := <-done
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if s := tr.Stats(); s.Waiting != 1 {
			t.Fatalf("cancelled waiter still pending: waiting = %d", s.Waiting)
		}
		src.set(1010)
		if err := <-keep; err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if s := tr.Stats(); s.Waiting != 0 {
			t.Fatalf("waiting = %d after all left", s.Waiting)
		}
	})
}

func TestWaiterRegisteredDuringLookIsServed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1001)
		src.latency = 0
		src.gate = make(chan struct{})
		// Schedule with a long pause: if the look in flight did not serve the
		// late waiter, it would wait an hour for the next one.
		tr := newTracker(t, Config{Source: src, Schedule: func(time.Duration) time.Duration { return time.Hour }, Timeout: -1})
		first := waitAsync(context.Background(), tr, 1005)
		synctest.Wait() // the first look is now blocked in the source
		if n := src.count(); n != 1 {
			t.Fatalf("looks = %d, want 1 in flight", n)
		}
		late := waitAsync(context.Background(), tr, 1007)
		synctest.Wait() // the late waiter is registered
		src.set(1007)
		src.gate <- struct{}{} // the in-flight look now answers 7
		start := time.Now()
		for _, ch := range []<-chan error{first, late} {
			if err := <-ch; err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("late waiter released after %v, want by the look in flight", d)
		}
		if n := src.count(); n != 1 {
			t.Fatalf("looks = %d, want 1", n)
		}
	})
}

func TestTimeoutIsTyped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(0x1_0000_0100)
		tr := newTracker(t, Config{Source: src, Timeout: 250 * time.Millisecond})
		start := time.Now()
		err := tr.Wait(context.Background(), 0x1_0000_2000)
		if d := time.Since(start); d != 250*time.Millisecond {
			t.Errorf("timed out after %v, want 250ms", d)
		}
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		var we *WaitError
		if !errors.As(err, &we) {
			t.Fatalf("err %T is not a *WaitError", err)
		}
		if we.Target != 0x1_0000_2000 || we.Seen != 0x1_0000_0100 {
			t.Fatalf("WaitError target %s seen %s, want 1/2000 and 1/100", we.Target, we.Seen)
		}
		if s := tr.Stats(); s.Waiting != 0 {
			t.Fatalf("timed-out waiter still pending: %d", s.Waiting)
		}
	})
}

func TestPromotedReplica(t *testing.T) {
	t.Run("fails waiters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			src := newFake(1001)
			tr := newTracker(t, Config{Source: src, Timeout: -1})
			done := waitAsync(context.Background(), tr, 1100)
			synctest.Wait()
			src.setRecovery(false)
			err := <-done
			if !errors.Is(err, ErrPromoted) {
				t.Fatalf("err = %v, want ErrPromoted", err)
			}
			// A later wait fails too, after one look, instead of hanging.
			if err := tr.Wait(context.Background(), 1200); !errors.Is(err, ErrPromoted) {
				t.Fatalf("later wait: err = %v, want ErrPromoted", err)
			}
		})
	})
	t.Run("allowed primary succeeds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			src := newFake(0)
			src.setRecovery(false)
			tr := newTracker(t, Config{Source: src, AllowPrimary: true, Timeout: -1})
			if err := tr.Wait(context.Background(), 1100); err != nil {
				t.Fatalf("err = %v, want success on a primary", err)
			}
		})
	})
}

// TestTimelineChange: when the replica starts following a new timeline (a
// failover), a wait pending at the switch ends with ErrTimelineChanged
// although the new timeline's positions soon pass its target: the write
// it waits for may be one the new history lacks. Waits before and after
// behave as usual.
func TestTimelineChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1000)
		src.setTimeline(1)
		tr := newTracker(t, Config{Source: src, Timeout: -1})
		if err := tr.Wait(context.Background(), 900); err != nil {
			t.Fatalf("wait on timeline 1: %v", err)
		}
		done := waitAsync(context.Background(), tr, 1100)
		synctest.Wait()
		// The receiver restarts (no timeline known), then follows the
		// new primary, whose positions pass the pending target.
		src.setTimeline(0)
		synctest.Wait()
		src.mu.Lock()
		src.st.Timeline, src.st.Replayed = 2, 1200
		src.mu.Unlock()
		err := <-done
		if !errors.Is(err, ErrTimelineChanged) {
			t.Fatalf("a wait pending at the switch: %v, want ErrTimelineChanged", err)
		}
		if err := tr.Wait(context.Background(), 1150); err != nil {
			t.Fatalf("a wait on the new timeline: %v", err)
		}
	})
}

var errDown = errors.New("connection refused")

func TestSourceErrors(t *testing.T) {
	t.Run("keep waiting, back off, recover", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			src := newFake(1001)
			src.setErr(errDown)
			tr := newTracker(t, Config{Source: src, Timeout: -1, RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond})
			done := waitAsync(context.Background(), tr, 1010)
			time.Sleep(2 * time.Second)
			// 10+20+40+80+160 ms, then every 200 ms: about 14 looks in 2 s,
			// far from the thousands a tight loop would make.
			if n := src.count(); n > 16 {
				t.Fatalf("%d looks in 2 s of errors: no back-off", n)
			}
			select {
			case err := <-done:
				t.Fatalf("waiter ended during errors: %v", err)
			default:
			}
			src.setErr(nil)
			src.set(1010)
			if err := <-done; err != nil {
				t.Fatalf("waiter after recovery: %v", err)
			}
		})
	})
	t.Run("timeout carries the last error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			src := newFake(1001)
			src.setErr(errDown)
			tr := newTracker(t, Config{Source: src, Timeout: time.Second})
			err := tr.Wait(context.Background(), 1010)
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, errDown) {
				t.Fatalf("err = %v, want ErrTimeout wrapping the source error", err)
			}
		})
	})
	t.Run("fail waiters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			src := newFake(1001)
			tr := newTracker(t, Config{Source: src, Timeout: -1, OnError: FailWaiters})
			done := waitAsync(context.Background(), tr, 1010)
			synctest.Wait()
			src.setErr(errDown)
			if err := <-done; !errors.Is(err, errDown) {
				t.Fatalf("err = %v, want the source error", err)
			}
		})
	})
}

func TestCloseEndsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFake(1001)
		tr, err := NewTracker(Config{Source: src, Timeout: -1})
		if err != nil {
			t.Fatal(err)
		}
		done := waitAsync(context.Background(), tr, 1010)
		synctest.Wait()
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending waiter: err = %v, want ErrClosed", err)
		}
		if err := tr.Wait(context.Background(), 1010); !errors.Is(err, ErrClosed) {
			t.Fatalf("wait after Close: err = %v, want ErrClosed", err)
		}
		if err := tr.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestCloseCancelsLookInFlight(t *testing.T) {
	src := newFake(1001)
	src.gate = make(chan struct{}) // the look blocks until its context ends
	tr, err := NewTracker(Config{Source: src, Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	done := waitAsync(context.Background(), tr, 1010)
	for src.count() == 0 {
		time.Sleep(time.Millisecond)
	}
	tr.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	// goleak in TestMain proves the tracker's goroutine is gone.
}

// TestConcurrentWaitersRace runs real goroutines against a source that a
// writer advances concurrently; under -race it checks that every waiter is
// released (no lost wake-ups) and nothing is left behind.
func TestConcurrentWaitersRace(t *testing.T) {
	src := newFake(1000)
	src.latency = 0
	tr := newTracker(t, Config{Source: src, Timeout: 10 * time.Second})
	const writers, rounds = 32, 200
	var (
		mu   sync.Mutex
		head LSN = 1000
	)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				mu.Lock()
				head += LSN(1 + rand.IntN(100))
				target := head
				mu.Unlock()
				// "Replication": the write shows up a little later.
				go func() {
					time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
					src.mu.Lock()
					if src.st.Replayed < target {
						src.st.Replayed = target
					}
					src.mu.Unlock()
				}()
				ctx := context.Background()
				var cancel context.CancelFunc = func() {}
				if r%10 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rand.IntN(100))*time.Microsecond)
				}
				err := tr.Wait(ctx, target)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := tr.Stats(); s.Waiting != 0 {
		t.Fatalf("%d waiters left behind", s.Waiting)
	}
}
