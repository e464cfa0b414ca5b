package main

// The bookmarks suite measures the region flip: a user writes in replica
// region A (20 ms from the primary region) and the next request reads in
// replica region B (80 ms), at once. Both distances apply to the app ->
// executor link and to the replication link. Each cycle runs the flow with
// a bookmark, without one, with the read forwarded to the primary (the
// alternative), and waiting LiteFS-style (polling B's replica every 1 ms
// for the write's position, then reading locally).

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/pgtest"
)

const (
	bmSecret  = "bookmarks-bench-secret-0123456789"
	bmRTTNear = 20 * time.Millisecond
	bmRTTFar  = 80 * time.Millisecond
)

// bmNote is the row each cycle writes and reads back.
type bmNote struct {
	ID   uint64
	Body string
}

func (bmNote) TableName() string { return "bm_notes" }

type bmEnv struct {
	peers   *peersEnv // for its cleanup and GORM helpers
	primary *gorm.DB
	pPlug   *flypg.Plugin
	a, b    *gorm.DB
	aPlug   *flypg.Plugin
	bPlug   *flypg.Plugin
	bLocal  *sql.DB       // B's replica, for the fixed-interval poller
	lastLSN atomic.Uint64 // commit LSN of A's last write (OnWrite)
}

// settledLooks returns A's tracker's looks once the look that released the
// last write's wait has been counted (the count follows the release).
func (e *bmEnv) settledLooks() uint64 {
	prev := e.aPlug.Stats().Tracker.Looks
	for {
		time.Sleep(time.Millisecond)
		s := e.aPlug.Stats().Tracker
		if s.Looks == prev && s.Waiting == 0 {
			return prev
		}
		prev = s.Looks
	}
}

func startBookmarksEnv(ctx context.Context) (*bmEnv, error) {
	c, err := pgtest.Start(ctx, pgtest.Options{Replicas: 2, ReplicationLinks: true})
	if err != nil {
		return nil, err
	}
	e := &bmEnv{peers: &peersEnv{cluster: c}}
	fail := func(err error) (*bmEnv, error) { e.peers.close(); return nil, err }
	if e.primary, err = e.peers.openGORM(c.Primary.DSN("")); err != nil {
		return fail(err)
	}
	if err := e.primary.AutoMigrate(&bmNote{}); err != nil {
		return fail(err)
	}
	e.pPlug = flypg.New(flypg.Config{Region: "iad", PrimaryRegion: "iad", Secret: bmSecret})
	e.peers.onClose(func() { e.pPlug.Close() })
	if err := e.primary.Use(e.pPlug); err != nil {
		return fail(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.pPlug.Serve(lis) }()
	e.peers.onClose(func() { e.pPlug.Close(); <-served })

	region := func(i int, name string, rtt time.Duration, onWrite func(context.Context, flypg.WriteEvent)) (*gorm.DB, *flypg.Plugin, error) {
		l, err := e.peers.link(name+"-executor", lis.Addr().String())
		if err != nil {
			return nil, nil, err
		}
		for _, l := range []*pgtest.Link{l, c.ReplicationLink(i)} {
			if err := l.SetRTT(rtt); err != nil {
				return nil, nil, err
			}
		}
		db, err := e.peers.openGORM(c.Replicas[i].DSN(""))
		if err != nil {
			return nil, nil, err
		}
		p := flypg.New(flypg.Config{Region: name, PrimaryRegion: "iad", PrimaryAddr: l.Addr(), Secret: bmSecret, OnWrite: onWrite})
		e.peers.onClose(func() { p.Close() })
		return db, p, db.Use(p)
	}
	if e.a, e.aPlug, err = region(0, "ams", bmRTTNear, func(_ context.Context, ev flypg.WriteEvent) {
		e.lastLSN.Store(uint64(ev.LSN))
	}); err != nil {
		return fail(err)
	}
	if e.b, e.bPlug, err = region(1, "syd", bmRTTFar, nil); err != nil {
		return fail(err)
	}
	if e.bLocal, err = e.b.DB(); err != nil {
		return fail(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return fail(err)
	}
	return e, nil
}

// write creates a note in region A under ctx and returns its ID.
func (e *bmEnv) write(ctx context.Context) (uint64, error) {
	n := bmNote{Body: "flip"}
	err := e.a.WithContext(ctx).Create(&n).Error
	return n.ID, err
}

// read reads the note in db under ctx: how long it took and whether the
// note was there.
func read(ctx context.Context, db *gorm.DB, id uint64) (time.Duration, bool, error) {
	start := time.Now()
	var n []bmNote
	err := db.WithContext(ctx).Where("id = ?", id).Find(&n).Error
	return time.Since(start), len(n) == 1, err
}

// flip writes a note in region A under wctx, then at once reads it in db
// under the context rctx returns, adding the read's time to times and
// counting it in stale if it missed the note.
func (e *bmEnv) flip(wctx context.Context, rctx func() context.Context, db *gorm.DB, times *sample, stale *int) error {
	id, err := e.write(wctx)
	if err != nil {
		return err
	}
	d, seen, err := read(rctx(), db, id)
	if err != nil {
		return err
	}
	*times = append(*times, d)
	if !seen {
		*stale++
	}
	return nil
}

// pollFixed waits LiteFS-style: it looks at B's replay position every 1 ms
// until it has reached target, and returns how many looks it took.
func (e *bmEnv) pollFixed(ctx context.Context, target lsn.LSN) (int, error) {
	polls := 0
	for {
		var replayed lsn.LSN
		polls++
		if err := e.bLocal.QueryRowContext(ctx, `SELECT pg_last_wal_replay_lsn()::text`).Scan(&replayed); err != nil {
			return polls, err
		}
		if replayed >= target {
			return polls, nil
		}
		// The peer's fixed interval is what this flow measures.
		time.Sleep(time.Millisecond)
	}
}

func runBookmarks(ctx context.Context, o options) (results, error) {
	cycles := 1000
	if o.quick {
		cycles = 50
	}
	e, err := startBookmarksEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer e.peers.close()

	// Warm up: connections in both regions, and the forwarded round trip
	// the automatic bound measures.
	for range 20 {
		if _, err := e.write(ctx); err != nil {
			return nil, err
		}
		if _, _, err := read(ctx, e.b.Clauses(flypg.UsePrimary), 1); err != nil {
			return nil, err
		}
	}

	var with, primary, local, fixed sample
	var staleWith, staleWithout, pollsFixed int
	bBefore := e.bPlug.Stats()
	for i := range cycles {
		if i%100 == 0 {
			o.logf("bookmarks: cycle %d of %d", i, cycles)
		}
		// With a bookmark.
		sctx := flypg.WithBookmark(ctx, flypg.Bookmark{})
		if err := e.flip(sctx, func() context.Context { return flypg.WithBookmark(ctx, flypg.BookmarkFrom(sctx)) }, e.b, &with, &staleWith); err != nil {
			return nil, err
		}
		// Without: the same flow, the read local at once.
		if err := e.flip(ctx, func() context.Context { return ctx }, e.b, &local, &staleWithout); err != nil {
			return nil, err
		}
		// The alternative: the read forwarded to the primary.
		var never int
		if err := e.flip(ctx, func() context.Context { return ctx }, e.b.Clauses(flypg.UsePrimary), &primary, &never); err != nil {
			return nil, err
		}
		// LiteFS-style: poll every 1 ms for the write's position.
		id, err := e.write(ctx)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		polls, err := e.pollFixed(ctx, lsn.LSN(e.lastLSN.Load()))
		if err != nil {
			return nil, err
		}
		pollsFixed += polls
		if _, _, err = read(ctx, e.b, id); err != nil {
			return nil, err
		}
		fixed = append(fixed, time.Since(start))
	}
	bAfter := e.bPlug.Stats()

	// Satisfied reads: A's own writes were awaited, so A's tracker knows.
	const satisfied = 200
	var readLooks uint64
	sat0 := e.aPlug.Stats().Bookmarks.Satisfied
	for range satisfied {
		sctx := flypg.WithBookmark(ctx, flypg.Bookmark{})
		id, err := e.write(sctx)
		if err != nil {
			return nil, err
		}
		before := e.settledLooks()
		if _, seen, err := read(sctx, e.a, id); err != nil || !seen {
			return nil, fmt.Errorf("satisfied read: seen %v, %v", seen, err)
		}
		readLooks += e.aPlug.Stats().Tracker.Looks - before
	}
	sat := e.aPlug.Stats().Bookmarks.Satisfied - sat0

	// The primary region: lookups per write with and without a session.
	const pw = 200
	l0 := e.pPlug.Stats().Bookmarks.Lookups
	for range pw {
		if err := e.primary.WithContext(ctx).Create(&bmNote{Body: "p"}).Error; err != nil {
			return nil, err
		}
	}
	l1 := e.pPlug.Stats().Bookmarks.Lookups
	for range pw {
		sctx := flypg.WithBookmark(ctx, flypg.Bookmark{})
		if err := e.primary.WithContext(sctx).Create(&bmNote{Body: "p"}).Error; err != nil {
			return nil, err
		}
		_ = flypg.BookmarkFrom(sctx)
	}
	l2 := e.pPlug.Stats().Bookmarks.Lookups

	r := results{
		"cycles":                                      float64(cycles),
		"stale_reads_with":                            float64(staleWith),
		"stale_reads_without":                         float64(staleWithout),
		"read_p50_ms_with":                            ms(with.percentile(50)),
		"read_p99_ms_with":                            ms(with.percentile(99)),
		"read_p50_ms_primary":                         ms(primary.percentile(50)),
		"read_p50_ms_local":                           ms(local.percentile(50)),
		"read_p50_ms_fixed_1ms":                       ms(fixed.percentile(50)),
		"reads_with_on_primary":                       float64(bAfter.Bookmarks.Primary - bBefore.Bookmarks.Primary),
		"reads_with_local_after_wait":                 float64(bAfter.Bookmarks.Waited - bBefore.Bookmarks.Waited),
		"polls_per_read_tracker":                      float64(bAfter.Tracker.Looks-bBefore.Tracker.Looks) / float64(cycles),
		"polls_per_read_fixed_1ms":                    float64(pollsFixed) / float64(cycles),
		"queries_per_satisfied_read":                  float64(readLooks) / satisfied,
		"satisfied_reads":                             float64(sat),
		"primary_region_extra_queries_per_write":      float64(l2-l1) / pw,
		"primary_region_extra_queries_per_write_none": float64(l1-l0) / pw,
	}
	return r, nil
}

func bookmarksGoals(r results) []goal {
	return []goal{
		{"stale_reads_with = 0", format(r["stale_reads_with"]), r["stale_reads_with"] == 0},
		{"stale_reads_without > 0 (the flow can read stale)", format(r["stale_reads_without"]), r["stale_reads_without"] > 0},
		{"read_p50_ms_with ≤ read_p50_ms_primary", fmt.Sprintf("%s ≤ %s", format(r["read_p50_ms_with"]), format(r["read_p50_ms_primary"])), r["read_p50_ms_with"] <= r["read_p50_ms_primary"]},
		{"queries_per_satisfied_read = 0", format(r["queries_per_satisfied_read"]), r["queries_per_satisfied_read"] == 0},
		{"primary_region_extra_queries_per_write ≤ 1 (0 without a session)", fmt.Sprintf("%s, %s", format(r["primary_region_extra_queries_per_write"]), format(r["primary_region_extra_queries_per_write_none"])),
			r["primary_region_extra_queries_per_write"] <= 1 && r["primary_region_extra_queries_per_write_none"] == 0},
	}
}
