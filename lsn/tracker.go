package lsn

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used where Config leaves a field zero.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultLookTimeout = 5 * time.Second
	DefaultRetryMin    = 10 * time.Millisecond
	DefaultRetryMax    = time.Second
)

// ErrorPolicy says what waiters experience while the Source fails.
type ErrorPolicy int

const (
	// KeepWaiting (the default): waiters keep waiting until replay is
	// observed, their context ends or the timeout fires; the tracker backs
	// off and keeps looking. A timeout error then carries the source's last
	// error, so the caller learns why.
	KeepWaiting ErrorPolicy = iota
	// FailWaiters: every pending waiter gets the source's error at once.
	FailWaiters
)

// Config configures a Tracker. Only Source is required.
type Config struct {
	// Source reports the local database's replay progress.
	Source Source

	// Timeout bounds every Wait; zero means DefaultTimeout, negative means
	// no limit beyond the caller's context.
	Timeout time.Duration

	// LookTimeout bounds one call of the Source; zero means
	// DefaultLookTimeout.
	LookTimeout time.Duration

	// Schedule returns the pause before the next look while waiters remain,
	// given how long replay has not advanced (since the episode's first look
	// or since the last advance). Nil means DefaultSchedule.
	Schedule func(stalled time.Duration) time.Duration

	// RetryMin and RetryMax bound the pause after failed looks, which
	// doubles with each consecutive failure. Zero means DefaultRetryMin and
	// DefaultRetryMax.
	RetryMin, RetryMax time.Duration

	// OnError chooses what waiters see while the Source fails.
	OnError ErrorPolicy

	// AllowPrimary declares that the local database may itself be a primary
	// (not in recovery). Waits then succeed as soon as a look reports so.
	// Without it such a database fails waiters with ErrPromoted: a promoted
	// replica never replays the old primary's writes.
	AllowPrimary bool

	// SegmentSize is the cluster's wal_segment_size, used by Normalize;
	// zero means DefaultSegmentSize.
	SegmentSize uint64

	// OnLook, if set, is called after every look, from the tracker's
	// goroutine; it must not block. Metrics hang here.
	OnLook func(Look)
}

// Look describes one call of the Source, for Config.OnLook.
type Look struct {
	Duration time.Duration
	Status   Status
	Err      error
	Released int // waiters the look ended (released, or failed under FailWaiters)
	Waiting  int // waiters still pending after it
}

// Stats are counters of a Tracker since it was created.
type Stats struct {
	Looks      uint64 // calls of the Source
	Waits      uint64 // calls of Wait
	CacheHits  uint64 // waits answered from the last look, with no query
	Waiting    int    // waiters pending now
	MaxWaiting int    // the most waiters pending at once
	Replayed   LSN    // the last replay position seen
}

// DefaultSchedule looks back to back for the first millisecond of a stall,
// where replication on a nearby replica usually completes, then pauses for
// half the stall so far, between 1 ms and 5 ms.
func DefaultSchedule(stalled time.Duration) time.Duration {
	return Backoff(time.Millisecond, time.Millisecond, 5*time.Millisecond)(stalled)
}

// Backoff returns a Schedule that looks back to back while the stall is
// shorter than eager, then pauses for half the stall so far, clamped to
// [min, max]: the pause grows geometrically with the stall.
func Backoff(eager, min, max time.Duration) func(stalled time.Duration) time.Duration {
	return func(stalled time.Duration) time.Duration {
		if stalled < eager {
			return 0
		}
		return clamp(stalled/2, min, max)
	}
}

func clamp(d, lo, hi time.Duration) time.Duration {
	if d < lo {
		return lo
	}
	if d > hi {
		return hi
	}
	return d
}

// Tracker waits for the local database to replay WAL positions. Create one
// per local database and share it: however many goroutines wait, one
// goroutine makes one look at a time, and none while nobody waits.
type Tracker struct {
	cfg  Config
	seen atomic.Uint64 // last replay position observed; written under mu

	mu      sync.Mutex
	waiters waitHeap
	active  bool // the poller is in an episode (or has been kicked into one)
	closed  bool
	lastErr error
	maxWait int
	tli     uint32 // the last timeline a look saw (0: none yet)

	looks, waits, hits atomic.Uint64

	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	ctx    context.Context // cancels an in-flight look on Close
	cancel context.CancelFunc
}

// NewTracker starts a tracker. Close stops it.
func NewTracker(cfg Config) (*Tracker, error) {
	if cfg.Source == nil {
		return nil, errors.New("lsn: NewTracker: Config.Source is nil")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.LookTimeout <= 0 {
		cfg.LookTimeout = DefaultLookTimeout
	}
	if cfg.Schedule == nil {
		cfg.Schedule = DefaultSchedule
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tracker{
		cfg:    cfg,
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
	go t.run()
	return t, nil
}

// Wait returns nil once the local database has replayed target. It returns
// a *WaitError when ctx ends, when Config.Timeout passes (ErrTimeout), when
// the database turns out not to be a replica (ErrPromoted), when the tracker
// is closed (ErrClosed), or, under FailWaiters, when a look fails.
//
// A target already covered by the last look returns at once with no query.
func (t *Tracker) Wait(ctx context.Context, target LSN) error {
	target = target.Normalize(t.cfg.SegmentSize)
	t.waits.Add(1)
	if LSN(t.seen.Load()) >= target {
		t.hits.Add(1)
		return nil
	}
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return t.waitError(target, start, err, nil)
	}
	w := &waiter{target: target, done: make(chan struct{})}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return t.waitError(target, start, ErrClosed, nil)
	}
	// The poller stores seen and releases waiters under mu, so this check
	// and the push cannot miss a release that happens in between.
	if LSN(t.seen.Load()) >= target {
		t.mu.Unlock()
		t.hits.Add(1)
		return nil
	}
	heap.Push(&t.waiters, w)
	if n := len(t.waiters); n > t.maxWait {
		t.maxWait = n
	}
	kick := !t.active
	t.active = true
	t.mu.Unlock()
	if kick {
		t.kick <- struct{}{} // capacity 1, and only the false->true transition sends
	}

	var timeout <-chan time.Time
	if t.cfg.Timeout > 0 {
		tm := time.NewTimer(t.cfg.Timeout)
		defer tm.Stop()
		timeout = tm.C
	}
	var reason error
	select {
	case <-w.done:
		if w.err == nil {
			return nil
		}
		return t.waitError(target, start, w.err, w.lastErr)
	case <-ctx.Done():
		reason = ctx.Err()
	case <-timeout:
		reason = ErrTimeout
	}

	t.mu.Lock()
	removed := w.index >= 0
	if removed {
		heap.Remove(&t.waiters, w.index)
	}
	lastErr := t.lastErr
	t.mu.Unlock()
	if !removed {
		// Released (or failed) in the same instant: that outcome wins, since
		// it says more than the timer did.
		if w.err == nil {
			return nil
		}
		return t.waitError(target, start, w.err, w.lastErr)
	}
	return t.waitError(target, start, reason, lastErr)
}

func (t *Tracker) waitError(target LSN, start time.Time, reason, lastErr error) error {
	var waited time.Duration
	if !start.IsZero() {
		waited = time.Since(start)
	}
	return &WaitError{Target: target, Seen: LSN(t.seen.Load()), Waited: waited, Err: reason, LastErr: lastErr}
}

// Replayed returns the last replay position the tracker observed.
func (t *Tracker) Replayed() LSN { return LSN(t.seen.Load()) }

// Stats returns the tracker's counters.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	waiting, maxWait := len(t.waiters), t.maxWait
	t.mu.Unlock()
	return Stats{
		Looks:      t.looks.Load(),
		Waits:      t.waits.Load(),
		CacheHits:  t.hits.Load(),
		Waiting:    waiting,
		MaxWaiting: maxWait,
		Replayed:   t.Replayed(),
	}
}

// Close stops the tracker: pending and later waits fail with ErrClosed, an
// in-flight look is cancelled, and Close returns once the tracker's
// goroutine has exited. It is safe to call more than once.
func (t *Tracker) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		<-t.done
		return nil
	}
	t.closed = true
	t.endAll(ErrClosed, nil)
	t.mu.Unlock()
	t.cancel()
	close(t.stop)
	<-t.done
	return nil
}

// run is the tracker's one goroutine: idle until a waiter arrives, then
// one episode of looks until no waiter is left.
func (t *Tracker) run() {
	defer close(t.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-t.kick:
		case <-t.stop:
			return
		}
		if !t.episode(timer) {
			return
		}
	}
}

// episode looks until no waiter is left; false means the tracker stops.
func (t *Tracker) episode(timer *time.Timer) bool {
	progressAt := time.Now()
	failures := 0
	for {
		st, took, err := t.look()
		if t.ctx.Err() != nil {
			return false
		}
		// Counted before any waiter is released, so that a waiter that
		// returns sees the look that released it counted.
		t.looks.Add(1)
		now := time.Now()

		t.mu.Lock()
		var ended int
		var pause time.Duration
		if err != nil {
			t.lastErr = err
			failures++
			if t.cfg.OnError == FailWaiters {
				ended = t.endAll(err, err)
			}
			pause = t.cfg.RetryMin << min(failures-1, 20)
			pause = clamp(pause, t.cfg.RetryMin, t.cfg.RetryMax)
		} else {
			t.lastErr = nil
			failures = 0
			prev := LSN(t.seen.Load())
			if st.Replayed > prev {
				progressAt = now
			}
			// Store what was seen, not the maximum: after a replica restart
			// replay may legitimately report an earlier position.
			t.seen.Store(uint64(st.Replayed))
			if st.Timeline > t.tli {
				// Timelines only grow. A newer one means a failover: the
				// waits still pending may be for writes past the switch
				// point, which the new history lacks although its
				// positions will pass them.
				if t.tli != 0 {
					ended = t.endAll(ErrTimelineChanged, nil)
				}
				t.tli = st.Timeline
			}
			switch {
			case st.InRecovery:
				ended += t.release(st.Replayed)
			case t.cfg.AllowPrimary:
				ended += t.endAll(nil, nil)
			default:
				ended += t.endAll(ErrPromoted, nil)
			}
			pause = t.cfg.Schedule(now.Sub(progressAt))
		}
		waiting := len(t.waiters)
		if waiting == 0 {
			t.active = false
		}
		t.mu.Unlock()

		if t.cfg.OnLook != nil {
			t.cfg.OnLook(Look{Duration: took, Status: st, Err: err, Released: ended, Waiting: waiting})
		}
		if waiting == 0 {
			return true
		}
		if pause > 0 {
			timer.Reset(pause)
			select {
			case <-timer.C:
			case <-t.stop:
				timer.Stop()
				return false
			}
		}
	}
}

func (t *Tracker) look() (Status, time.Duration, error) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.LookTimeout)
	defer cancel()
	start := time.Now()
	st, err := t.cfg.Source.Replay(ctx, LSN(t.seen.Load()))
	return st, time.Since(start), err
}

// release ends every waiter whose target is at or below replayed. Caller
// holds mu.
func (t *Tracker) release(replayed LSN) int {
	n := 0
	for len(t.waiters) > 0 && t.waiters[0].target <= replayed {
		w := heap.Pop(&t.waiters).(*waiter)
		close(w.done)
		n++
	}
	return n
}

// endAll ends every waiter with err (nil: success). Caller holds mu.
func (t *Tracker) endAll(err, lastErr error) int {
	n := len(t.waiters)
	for _, w := range t.waiters {
		w.index = -1
		w.err, w.lastErr = err, lastErr
		close(w.done)
	}
	clear(t.waiters)
	t.waiters = t.waiters[:0]
	return n
}

type waiter struct {
	target  LSN
	index   int // position in the heap; -1 once ended
	done    chan struct{}
	err     error
	lastErr error
}

// waitHeap is a min-heap of waiters by target, so a look releases the
// waiters it satisfies in O(k log n) and a cancelled waiter leaves in
// O(log n).
type waitHeap []*waiter

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].target < h[j].target }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	n := len(old)
	w := old[n-1]
	old[n-1] = nil
	w.index = -1
	*h = old[:n-1]
	return w
}
