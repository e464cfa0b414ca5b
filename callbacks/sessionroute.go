package callbacks

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/lsn"
)

// Bound limits for Sessions.Bound's automatic choice.
const (
	// DefaultSessionBound is the bound before any round trip to the
	// executor was measured.
	DefaultSessionBound = 100 * time.Millisecond
	// MinSessionBound is the least automatic bound: a nearby replica gets
	// that long to catch up even when the primary is nearer still.
	MinSessionBound = 2 * time.Millisecond
)

// Sessions configures how a Router honours sessions (WithSession): the
// local cluster's identity, and how long a read waits for the local
// replica before it runs on the primary instead.
type Sessions struct {
	// System is the local database cluster's system identifier.
	System uint64
	// Timeline returns the local replica's timeline (0: unknown); fresh
	// asks to read it again rather than from a cache.
	Timeline func(ctx context.Context, fresh bool) uint32
	// Signer signs the marks of this process's writes and checks the
	// marks that came from outside.
	Signer *Signer
	// Bound is how long a read under a session waits for the local replica
	// before it runs on the primary. Zero: the measured time of a round
	// trip to the primary (DefaultSessionBound until one was measured; at
	// least MinSessionBound, at most MaxBound).
	Bound time.Duration
	// MaxBound caps the automatic bound; zero: no cap.
	MaxBound time.Duration
	// Debug, if set, receives the session events worth a debug log line.
	Debug func(msg string, args ...any)

	rtt   atomic.Int64 // smoothed forwarded round trip, ns; 0: none measured
	stats sessionCounters
}

type sessionCounters struct {
	reads, satisfied, waited, primary, foreign, invalid, advances atomic.Uint64
}

// SessionStats are counters of reads and writes under sessions.
type SessionStats struct {
	Reads     uint64 // local reads under a session that had a mark for this cluster
	Satisfied uint64 // of those, reads the tracker already knew were safe: no query, no wait
	Waited    uint64 // of those, reads that waited for the replica and ran locally
	Primary   uint64 // reads under a session that ran on the primary instead
	Foreign   uint64 // sessions whose marks named other clusters only (ignored)
	Invalid   uint64 // sessions whose mark failed its authentication (ignored)
	Advances  uint64 // writes that advanced a session
}

// Stats returns the counters.
func (s *Sessions) Stats() SessionStats {
	if s == nil {
		return SessionStats{}
	}
	c := &s.stats
	return SessionStats{Reads: c.reads.Load(), Satisfied: c.satisfied.Load(), Waited: c.waited.Load(),
		Primary: c.primary.Load(), Foreign: c.foreign.Load(), Invalid: c.invalid.Load(), Advances: c.advances.Load()}
}

// bound returns how long a read waits for the local replica.
func (s *Sessions) bound() time.Duration {
	if s.Bound > 0 {
		return s.Bound
	}
	b := time.Duration(s.rtt.Load())
	if b == 0 {
		b = DefaultSessionBound
	}
	b = max(b, MinSessionBound)
	if s.MaxBound > 0 {
		b = min(b, s.MaxBound)
	}
	return b
}

// NoteRoundTrip feeds the automatic bound: d is the time a forwarded unit
// took over rpcs round trips.
func (s *Sessions) NoteRoundTrip(d time.Duration, rpcs int) {
	if s == nil || rpcs <= 0 || d <= 0 {
		return
	}
	sample := int64(d) / int64(rpcs)
	for {
		old := s.rtt.Load()
		next := sample
		if old != 0 {
			next = old + (sample-old)/8
		}
		if s.rtt.CompareAndSwap(old, next) {
			return
		}
	}
}

func (s *Sessions) debug(msg string, args ...any) {
	if s.Debug != nil {
		s.Debug(msg, args...)
	}
}

func (s *Sessions) timeline(ctx context.Context, fresh bool) uint32 {
	if s.Timeline == nil {
		return 0
	}
	return s.Timeline(ctx, fresh)
}

// advance records a write at l, committed in this cluster, in ctx's session.
func (s *Sessions) advance(ctx context.Context, l lsn.LSN) {
	if s == nil || l == 0 {
		return
	}
	sess := SessionFrom(ctx)
	if sess == nil {
		return
	}
	sess.Advance(s.Signer.Sign(Mark{System: s.System, Timeline: s.timeline(ctx, false), LSN: l}))
	s.stats.advances.Add(1)
}

// sessionOnPrimary is readRoute's condition for sessions: under a session (WithSession), it first waits, up to the
// bound, until the local replica has replayed the session's mark; a mark
// the replica cannot reach in time, or one of another timeline, sends the
// read to the primary. reason says why, for the debug log.
func (r *Router) sessionOnPrimary(ctx context.Context) (primary bool, reason string) {
	s := r.Sessions
	if s == nil || fly.IsLocal(ctx) {
		return false, ""
	}
	sess := SessionFrom(ctx)
	if sess == nil {
		return false, ""
	}
	m, found, foreign, invalid := sess.markFor(s.System, s.Signer)
	switch {
	case foreign:
		s.stats.foreign.Add(1)
		s.debug("flypg: bookmark of another database cluster ignored", "cluster", s.System)
	case invalid:
		s.stats.invalid.Add(1)
		s.debug("flypg: bookmark failed authentication; ignored", "cluster", s.System)
	}
	if !found {
		return false, ""
	}
	s.stats.reads.Add(1)
	if m.LSN == UnknownLSN {
		s.stats.primary.Add(1)
		return true, "session: position of a write unknown"
	}
	if tl := s.timeline(ctx, false); m.Timeline != 0 && tl != 0 && m.Timeline != tl {
		if m.Timeline > tl {
			tl = s.timeline(ctx, true) // the replica may have followed a failover since
		}
		if m.Timeline != tl {
			// A failover came between: the replica cannot tell whether it
			// has the mark's position (it may never come). The primary can.
			s.stats.primary.Add(1)
			return true, "session: another timeline"
		}
	}
	if r.Tracker.Replayed() >= m.LSN {
		s.stats.satisfied.Add(1)
		return false, ""
	}
	wctx, cancel := context.WithTimeout(ctx, s.bound())
	defer cancel()
	err := r.Tracker.Wait(wctx, m.LSN)
	if err == nil {
		s.stats.waited.Add(1)
		return false, ""
	}
	if ctx.Err() != nil {
		// The caller gave up: the read fails on the replica with its
		// context's error, as it would without a session.
		return false, ""
	}
	s.stats.primary.Add(1)
	if errors.Is(err, context.DeadlineExceeded) {
		return true, "session: replica behind the bookmark past the bound"
	}
	return true, "session: " + err.Error()
}
