package callbacks

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/lsn"
)

// When the local database is promoted (it leaves recovery: a failover
// chose it), this node follows the database's own decision: with
// FollowPromotion, writes and transactions run on it instead of being
// forwarded, and nothing waits for replication. A forwarded write still in
// flight at that moment committed on the old primary, which the promoted
// database will never replay: its wait ends with a *ReplicationError
// wrapping lsn.ErrPromoted. One node never has two writable targets: it
// forwards, or it writes locally.

// reasonLocalPrimary is why a transaction runs on the local database when
// it is the primary.
const reasonLocalPrimary = "local primary"

// WritesLocally reports whether the local database was seen promoted and
// writes run on it (Router.FollowPromotion).
func (r *Router) WritesLocally() bool {
	return r.FollowPromotion && r.avail.promoted.Load()
}

// LocalPromoted tells the Router that the local database was seen out of
// recovery: with FollowPromotion, writes run on it from now on. The
// Router learns it by itself too (tracker looks, probes, and a check when
// the executor cannot be reached).
func (r *Router) LocalPromoted() { r.promoted() }

// promoted records that the local database is a primary now.
func (r *Router) promoted() {
	if !r.FollowPromotion || r.avail.promoted.Swap(true) {
		return
	}
	if r.Logger != nil {
		r.Logger.Warn("flypg: the local database was promoted: writes run on it, nothing is forwarded")
	}
	// Reads are fresh on a primary: nothing is owed.
	r.back(lsn.LSN(math.MaxUint64))
}

// demoted records that the local database refused a write as read-only
// after it was seen promoted: it is a replica again, and writes are
// forwarded.
func (r *Router) demoted() {
	if r.avail.promoted.Swap(false) && r.Logger != nil {
		r.Logger.Warn("flypg: the local database is read-only again: writes are forwarded")
	}
}

// forwardFailed is told about the error of a forwarded unit. When the
// forwarding failed (the executor could not be reached, does not serve,
// or lost its primary), the local database may be the one that was
// promoted: it is checked, at
// most once per ProbeInterval, in the background.
func (r *Router) forwardFailed(err error) {
	if err == nil || !r.FollowPromotion || r.avail.promoted.Load() {
		return
	}
	var fe *forward.Error
	if !errors.As(err, &fe) {
		return // the primary's own answer (a *pgconn.PgError): it is there
	}
	a := &r.avail
	every := r.probeInterval()
	a.mu.Lock()
	if a.closed || a.checking || time.Since(a.checked) < every {
		a.mu.Unlock()
		return
	}
	a.checking, a.checked = true, time.Now()
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.stop, 4*every)
		st, err := r.source().Replay(ctx, 0)
		cancel()
		if err == nil && !st.InRecovery {
			r.promoted()
		}
		a.mu.Lock()
		a.checking = false
		a.mu.Unlock()
	}()
}
