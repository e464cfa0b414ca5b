package flypg

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"strconv"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/lsn"
)

// BookmarkStats are counters of reads and writes under bookmarks.
type BookmarkStats struct {
	callbacks.SessionStats
	// Lookups counts the queries that read a commit position for a
	// bookmark in the primary region (at most one per BookmarkFrom after
	// writes).
	Lookups uint64
}

// bookmarkState is a plugin's part in bookmarks.
type bookmarkState struct {
	sessions   *callbacks.Sessions
	timeline   atomic.Uint32 // the local replica's, 0: unknown
	timelineAt atomic.Int64  // when it was read, unix ns
	lookups    atomic.Uint64
	system     atomic.Uint64 // primary region: the cluster's, once read
}

// timelineRefresh is how often a replica's timeline may be read again when
// a bookmark names a later one.
const timelineRefresh = time.Second

// bookmarkSigner returns the signer of bookmarks: keyed from the secret
// (old secrets still accepted), or none without a secret.
func (p *Plugin) bookmarkSigner() *callbacks.Signer {
	s := p.secrets.Open()
	if s.secret == "" {
		return callbacks.NewSigner()
	}
	keys := [][]byte{bookmarkKey(s.secret)}
	for _, o := range s.old {
		keys = append(keys, bookmarkKey(o))
	}
	return callbacks.NewSigner(keys...)
}

// bookmarkKey derives the key that signs bookmarks from a secret, apart
// from the secret's other uses.
func bookmarkKey(secret string) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("flypg bookmark v1"))
	return h.Sum(nil)
}

// replicaSessions is the session routing of a replica-region plugin whose
// local replica belongs to id's cluster.
func (p *Plugin) replicaSessions(id forward.Identity) *callbacks.Sessions {
	p.replicaTimeline(context.Background(), true)
	p.bm.sessions = &callbacks.Sessions{
		System: id.SystemIdentifier, Timeline: p.replicaTimeline, Signer: p.bookmarkSigner(),
		Bound: p.cfg.BookmarkWait, MaxBound: p.cfg.AwaitTimeout, Debug: p.log.Debug,
	}
	return p.bm.sessions
}

// replicaTimelineSQL reads a replica's timeline: the one WAL is received
// on, else the last restart point's.
const replicaTimelineSQL = `SELECT GREATEST((SELECT timeline_id FROM pg_control_checkpoint()), COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), 0))`

// replicaTimeline returns the local replica's timeline, read again when
// fresh and not read within timelineRefresh; 0 when unknown.
func (p *Plugin) replicaTimeline(ctx context.Context, fresh bool) uint32 {
	last := p.bm.timelineAt.Load()
	if !fresh || last != 0 && time.Since(time.Unix(0, last)) < timelineRefresh {
		return p.bm.timeline.Load()
	}
	p.bm.timelineAt.Store(time.Now().UnixNano())
	// A look-up of one row: bounded like a wait for replication, as
	// RPCTimeout may be none.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.AwaitTimeout)
	defer cancel()
	var tl int64
	if err := p.local.QueryRowContext(ctx, replicaTimelineSQL).Scan(&tl); err != nil {
		p.log.Debug("flypg: read the replica's timeline", "err", err)
		return p.bm.timeline.Load()
	}
	p.bm.timeline.Store(uint32(tl))
	return uint32(tl)
}

// primarySessions installs what a primary-region plugin needs for
// bookmarks: a callback that notes writes made under a session.
func (p *Plugin) primarySessions(db *gorm.DB) error {
	p.bm.sessions = &callbacks.Sessions{Signer: p.bookmarkSigner()}
	return callbacks.RegisterPrimary(db, func(s *callbacks.Session) { s.Touch(p, p.commitMark) })
}

// commitPositionSQL reads, in one query, what a primary-region bookmark
// names: the insert position (after a commit, at or past it), the WAL
// file it is in (whose name starts with the timeline), the cluster's
// system identifier and its WAL segment size.
const commitPositionSQL = `SELECT pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn()), (SELECT system_identifier FROM pg_control_system()), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')`

// commitMark reads the primary's position after a session's writes. If it
// cannot, the mark says so (callbacks.UnknownLSN): reads under it run on
// the primary until the session writes again.
func (p *Plugin) commitMark(ctx context.Context) callbacks.Mark {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.AwaitTimeout)
	defer cancel()
	p.bm.lookups.Add(1)
	var pos, file, seg string
	var sys int64
	err := p.local.QueryRowContext(ctx, commitPositionSQL).Scan(&pos, &file, &sys, &seg)
	var l lsn.LSN
	var tl uint64
	if err == nil {
		if l, err = lsn.Parse(pos); err == nil && len(file) >= 8 {
			tl, err = strconv.ParseUint(file[:8], 16, 32)
		}
	}
	if err != nil {
		p.log.Warn("flypg: the commit position of a write under a bookmark could not be read; its reads go to the primary", "err", err)
		if sys == 0 {
			sys = int64(p.bm.system.Load())
		}
		return p.bm.sessions.Signer.Sign(callbacks.Mark{System: uint64(sys), LSN: callbacks.UnknownLSN})
	}
	p.bm.system.Store(uint64(sys))
	l = l.Normalize(lsn.ParseSegmentSize(seg))
	return p.bm.sessions.Signer.Sign(callbacks.Mark{System: uint64(sys), Timeline: uint32(tl), LSN: l})
}

// bookmarkStats returns the counters. Caller holds mu.
func (p *Plugin) bookmarkStats() BookmarkStats {
	return BookmarkStats{SessionStats: p.bm.sessions.Stats(), Lookups: p.bm.lookups.Load()}
}
