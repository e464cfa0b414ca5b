package callbacks

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/lsn"
)

// Reasons a read that would run on the local replica runs on the primary.
const (
	// ReasonUnreachable: the local replica is down or refuses connections.
	ReasonUnreachable = "replica unreachable"
	// ReasonLagging: the local replica is further behind than MaxLag (a
	// write waited that long for it) or MaxLagBytes.
	ReasonLagging = "replica lagging"
	// ReasonCatchingUp: reads have just returned to the local replica,
	// which has not yet replayed everything this node wrote or read on the
	// primary, and did not within a short wait.
	ReasonCatchingUp = "replica catching up"
)

// Reasons lists the reasons of a Mode on the primary.
var Reasons = []string{ReasonUnreachable, ReasonLagging}

// catchUpWait bounds a read's wait for the local replica to replay what
// this node wrote or read on the primary before reads returned to it:
// past it, the read runs on the primary.
const catchUpWait = time.Second

// Mode is where reads that would run on the local replica run now, and
// why.
type Mode struct {
	Primary bool      // reads run on the primary
	Reason  string    // why (a Reason* constant); "" when local
	Since   time.Time // when the mode began; zero for the initial local mode
}

// readRoute decides whether a read that the routing rules leave on the
// local replica runs on the primary instead (forwarded), and why. It is the
// one place that decides it: every condition that moves reads off the local
// replica belongs here.
func (r *Router) readRoute(ctx context.Context) (primary bool, reason string) {
	if fly.IsLocal(ctx) {
		return false, ""
	}
	if m := r.avail.mode(); m.Primary {
		return true, m.Reason
	}
	if g := lsn.LSN(r.avail.gate.Load()); g != 0 {
		// Reads have just returned: the replica must first show everything
		// this node saw on the primary. Usually it has, or does within
		// moments; the tracker knows without a query once it has.
		if g.Normalize(0) <= r.Tracker.Replayed() {
			r.avail.gate.CompareAndSwap(uint64(g), 0)
		} else {
			wctx, cancel := context.WithTimeout(ctx, catchUpWait)
			err := r.Tracker.Wait(wctx, g)
			cancel()
			if err != nil {
				return true, ReasonCatchingUp
			}
		}
	}
	return r.sessionOnPrimary(ctx)
}

// routedKey marks a context whose statement readRoute already kept local.
type routedKey struct{}

// routedLocal marks ctx: readRoute kept its statement on the local replica.
func routedLocal(ctx context.Context) context.Context {
	return context.WithValue(ctx, routedKey{}, true)
}

// readRouteOnce is readRoute, unless the statement's route callback
// already decided it.
func (r *Router) readRouteOnce(ctx context.Context) (primary bool, reason string) {
	if done, _ := ctx.Value(routedKey{}).(bool); done {
		return false, ""
	}
	return r.readRoute(ctx)
}

// Mode returns where reads run now.
func (r *Router) Mode() Mode { return r.avail.mode() }

// availability is the Router's view of the local replica: whether reads
// run on it, what this node has written meanwhile, and the probe that
// brings reads back.
type availability struct {
	mu      sync.Mutex
	cur     Mode
	owed    lsn.LSN            // the highest LSN written or read on the primary while reads ran there
	gate    atomic.Uint64      // owed when reads returned, until the replica has replayed it
	highest atomic.Uint64      // the highest LSN a wait was for
	wake    context.Context    // ended when reads leave the local replica: waits give up
	wakeEnd context.CancelFunc //
	probing bool
	closed  bool

	promoted atomic.Bool // the local database was seen out of recovery
	checking bool        // a role check runs
	checked  time.Time   // when the last one began

	stop    context.Context // ended by Close
	stopEnd context.CancelFunc
	wg      sync.WaitGroup
}

func (a *availability) init() {
	a.stop, a.stopEnd = context.WithCancel(context.Background())
	a.wake, a.wakeEnd = context.WithCancel(context.Background())
}

func (a *availability) mode() Mode {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// owe records l, written or read on the primary while reads run there:
// reads come back to the local replica only once it has replayed it. It
// reports whether reads run on the primary (false: l is not recorded and
// the caller waits as usual).
func (a *availability) owe(l lsn.LSN) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.cur.Primary {
		return false
	}
	if l > a.owed {
		a.owed = l
	}
	return true
}

// waitContext returns ctx, ended also when reads leave the local replica
// (a wait for it is then pointless), and a function to release it.
func (a *availability) waitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	a.mu.Lock()
	wake := a.wake
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(wake, cancel)
	return ctx, func() { stop(); cancel() }
}

// leave moves reads to the primary for reason. It reports whether they
// were on the local replica until now.
func (r *Router) leave(reason string, cause error) bool {
	a := &r.avail
	a.mu.Lock()
	if a.closed || a.cur.Primary {
		a.mu.Unlock()
		return false
	}
	a.cur = Mode{Primary: true, Reason: reason, Since: time.Now()}
	a.wakeEnd()
	start := !a.probing
	a.probing = true
	if start {
		a.wg.Add(1)
	}
	m := a.cur
	a.mu.Unlock()
	if r.Logger != nil {
		r.Logger.Warn("flypg: reads run on the primary", "reason", reason, "err", cause)
	}
	r.notifyMode(m)
	if start {
		go r.probe()
	}
	return true
}

// back returns reads to the local replica, which has replayed target. A
// write or read on the primary may have happened since the replica was
// seen at target: reads first wait until it has replayed what was owed at
// the switch (see readRoute), writes wait for it again.
func (r *Router) back(target lsn.LSN) bool {
	a := &r.avail
	a.mu.Lock()
	if a.closed || !a.cur.Primary {
		a.mu.Unlock()
		return false
	}
	was := a.cur
	a.cur = Mode{Since: time.Now()}
	if a.owed.Normalize(0) > target && uint64(a.owed) > a.gate.Load() {
		a.gate.Store(uint64(a.owed))
	}
	a.owed = 0
	a.probing = false // the probe returns
	a.wake, a.wakeEnd = context.WithCancel(context.Background())
	m := a.cur
	a.mu.Unlock()
	if r.Logger != nil {
		r.Logger.Info("flypg: reads run on the local replica again", "after", m.Since.Sub(was.Since).Round(time.Millisecond), "replayed", target)
	}
	r.notifyMode(m)
	return true
}

func (r *Router) notifyMode(m Mode) {
	r.debug("flypg: read mode", "primary", m.Primary, "reason", m.Reason)
	if r.OnMode != nil {
		r.OnMode(m)
	}
}

// DefaultProbeInterval is the pause between two looks at an unreachable
// local replica when Router.ProbeInterval is zero.
const DefaultProbeInterval = 250 * time.Millisecond

// probe looks at the local replica at a bounded rate while reads run on
// the primary, and brings them back once it answers and has replayed
// everything this node wrote or read on the primary meanwhile.
func (r *Router) probe() {
	a := &r.avail
	defer a.wg.Done()
	every := r.probeInterval()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-a.stop.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(a.stop, every*4)
		st, err := r.source().Replay(ctx, 0)
		cancel()
		r.reads.probes.Add(1)
		if err == nil && !st.InRecovery && r.FollowPromotion {
			r.promoted() // returns reads to it
			return
		}
		if err != nil || !st.InRecovery {
			continue
		}
		a.mu.Lock()
		owed := a.owed
		a.mu.Unlock()
		if st.Replayed < owed.Normalize(0) {
			continue
		}
		if r.back(st.Replayed) {
			return
		}
	}
}

func (r *Router) probeInterval() time.Duration {
	if r.ProbeInterval <= 0 {
		return DefaultProbeInterval
	}
	return r.ProbeInterval
}

// source is what the probe asks: Router.Source, else one of its own on the
// local database.
func (r *Router) source() lsn.Source {
	r.srcOnce.Do(func() {
		if r.Source != nil {
			r.src = r.Source
			return
		}
		db, err := r.localDB()
		if err != nil {
			r.src = lsn.SourceFunc(func(context.Context, lsn.LSN) (lsn.Status, error) { return lsn.Status{}, err })
			return
		}
		s := lsn.NewReplaySource(db)
		r.src, r.ownSrc = s, s
	})
	return r.src
}

// Close stops what the Router runs in the background (the probe of an
// unreachable replica). Statements keep their routing; reads that moved to
// the primary stay there.
func (r *Router) Close() error {
	a := &r.avail
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	if a.stopEnd != nil {
		a.stopEnd()
	}
	a.wg.Wait()
	if r.ownSrc != nil {
		return r.ownSrc.Close()
	}
	return nil
}
