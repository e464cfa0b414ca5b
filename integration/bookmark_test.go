package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// bookmarkCycles is how many write-then-read cycles each carrier runs.
const bookmarkCycles = 8

// TestBookmarks writes in one region and reads at once in another, on a
// primary with two real replicas, the far one behind: a bookmark carried
// by context, by a job's payload and from the primary region makes the
// read see the write every time, for every kind of write; without it the
// same flow reads stale (proving the test tests something). Malformed,
// foreign and forged bookmarks are ignored; a session whose replica is cut
// off reads on the primary after BookmarkWait, not after the replication
// timeout.
func TestBookmarks(t *testing.T) {
	t.Parallel()
	c := startBookmarkCluster(t)
	e := newBookmarkEnv(t, c, 0)
	note, err := flypg.Register(e.pPlug, "note", func(ctx context.Context, tx *gorm.DB, body string) (uint, error) {
		n := BmNote{Body: body}
		err := tx.Create(&n).Error
		return n.ID, err
	})
	noErr(t, err)
	sqlNear, err := e.nPlug.DB()
	noErr(t, err)

	// Each writer writes one note under ctx in the near region (or the
	// primary region) and returns its ID.
	writers := []struct {
		name  string
		write func(ctx context.Context) uint
	}{
		{"create", func(ctx context.Context) uint {
			n := BmNote{Body: "create"}
			ok(t, e.near.WithContext(ctx).Create(&n))
			return n.ID
		}},
		{"noawait", func(ctx context.Context) uint {
			n := BmNote{Body: "noawait"}
			ok(t, e.near.WithContext(fly.NoAwait(ctx)).Create(&n))
			return n.ID
		}},
		{"transaction", func(ctx context.Context) uint {
			var n BmNote
			noErr(t, e.near.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				n = BmNote{Body: "tx"}
				return tx.Create(&n).Error
			}))
			return n.ID
		}},
		{"call", func(ctx context.Context) uint {
			id, err := note.Call(ctx, e.near, "call")
			noErr(t, err)
			return id
		}},
		{"database/sql", func(ctx context.Context) uint {
			var id uint
			noErr(t, sqlNear.QueryRowContext(ctx, `INSERT INTO bm_notes (body) VALUES ('sql') RETURNING id`).Scan(&id))
			return id
		}},
		{"primary region", func(ctx context.Context) uint {
			n := BmNote{Body: "primary"}
			ok(t, e.primary.WithContext(ctx).Create(&n))
			return n.ID
		}},
	}

	t.Run("context", func(t *testing.T) {
		for _, w := range writers {
			t.Run(w.name, func(t *testing.T) {
				for range bookmarkCycles {
					ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
					id := w.write(ctx)
					b := flypg.BookmarkFrom(ctx)
					if b.IsZero() {
						t.Fatal("no bookmark after a write under a session")
					}
					if !sees(t, flypg.WithBookmark(context.Background(), b), e.far, id) {
						t.Fatalf("the far region missed note %d under bookmark %s", id, b)
					}
				}
			})
		}
	})

	t.Run("read-only transaction", func(t *testing.T) {
		for range bookmarkCycles {
			ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
			id := writers[0].write(ctx)
			var n []BmNote
			noErr(t, e.far.WithContext(flypg.WithBookmark(context.Background(), flypg.BookmarkFrom(ctx))).Transaction(func(tx *gorm.DB) error {
				return tx.Where("id = ?", id).Find(&n).Error
			}, &sql.TxOptions{ReadOnly: true}))
			if len(n) != 1 {
				t.Fatalf("a read-only transaction in the far region missed note %d", id)
			}
		}
	})

	t.Run("without bookmark reads stale", func(t *testing.T) {
		stale := 0
		for _, w := range writers {
			for range bookmarkCycles {
				id := w.write(context.Background())
				if !sees(t, context.Background(), e.far, id) {
					stale++
				}
			}
		}
		if stale == 0 {
			t.Fatal("without bookmarks the far region never read stale: the test proves nothing")
		}
		t.Logf("%d of %d reads without a bookmark were stale", stale, len(writers)*bookmarkCycles)
	})

	t.Run("job payload", func(t *testing.T) {
		type job struct {
			NoteID   uint           `json:"note_id"`
			Bookmark flypg.Bookmark `json:"bookmark"`
		}
		queue := make(chan []byte, bookmarkCycles)
		for range bookmarkCycles {
			ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
			n := BmNote{Body: "job"}
			ok(t, e.near.WithContext(fly.NoAwait(ctx)).Create(&n))
			payload, err := json.Marshal(job{NoteID: n.ID, Bookmark: flypg.BookmarkFrom(ctx)})
			noErr(t, err)
			queue <- payload
		}
		close(queue)
		for payload := range queue {
			var j job
			noErr(t, json.Unmarshal(payload, &j))
			if !sees(t, flypg.WithBookmark(context.Background(), j.Bookmark), e.far, j.NoteID) {
				t.Fatalf("the worker missed note %d (payload %s)", j.NoteID, payload)
			}
		}
	})

	t.Run("primary region costs one query per bookmark, none without", func(t *testing.T) {
		before := e.pPlug.Stats().Bookmarks.Lookups
		for range 3 {
			ok(t, e.primary.Create(&BmNote{Body: "no session"}))
		}
		if got := e.pPlug.Stats().Bookmarks.Lookups - before; got != 0 {
			t.Fatalf("writes without a session made %d lookups", got)
		}
		ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
		n := BmNote{Body: "session"}
		ok(t, e.primary.WithContext(ctx).Create(&n))
		b := flypg.BookmarkFrom(ctx)
		if got := e.pPlug.Stats().Bookmarks.Lookups - before; got != 1 {
			t.Fatalf("a write and BookmarkFrom under a session made %d lookups, want 1", got)
		}
		if flypg.BookmarkFrom(ctx).String() != b.String() || e.pPlug.Stats().Bookmarks.Lookups-before != 1 {
			t.Fatal("BookmarkFrom without a new write looked again or changed")
		}
		if !sees(t, flypg.WithBookmark(context.Background(), b), e.far, n.ID) {
			t.Fatal("a primary-region bookmark was not honoured in the far region")
		}
	})

	t.Run("malformed foreign and forged bookmarks are ignored", func(t *testing.T) {
		ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
		n := BmNote{Body: "real"}
		ok(t, e.near.WithContext(ctx).Create(&n))
		real := flypg.BookmarkFrom(ctx).String()
		fields := strings.Split(strings.TrimPrefix(real, "1_"), ".")
		for _, text := range []string{"garbage", "1_zz.1.1.", real + "x"} {
			if _, err := flypg.ParseBookmark(text); err == nil {
				t.Fatalf("ParseBookmark(%q) accepted malformed text", text)
			}
		}
		foreign := "1_1234.1.ffffffff00000000."                                  // another cluster
		forged := fmt.Sprintf("1_%s.%s.ffffffff00000000.", fields[0], fields[1]) // no tag
		tampered := fmt.Sprintf("1_%s.%s.ffffffff00000000.%s", fields[0], fields[1], fields[3])
		for _, text := range []string{foreign, forged, tampered} {
			b, err := flypg.ParseBookmark(text)
			noErr(t, err)
			before := e.fPlug.Stats().Bookmarks
			start := time.Now()
			sees(t, flypg.WithBookmark(context.Background(), b), e.far, n.ID)
			took := time.Since(start)
			after := e.fPlug.Stats().Bookmarks
			if after.Primary != before.Primary {
				t.Errorf("bookmark %s sent a read to the primary", text)
			}
			if after.Foreign+after.Invalid != before.Foreign+before.Invalid+1 {
				t.Errorf("bookmark %s was not counted as foreign or invalid: %+v -> %+v", text, before, after)
			}
			if took > 5*time.Second {
				t.Errorf("a read under bookmark %s took %s", text, took)
			}
		}
	})

	t.Run("waits locally when the replica is near", func(t *testing.T) {
		// Written in the far region, read in the near one: the near
		// replica replays quickly, so the read stays local.
		before := e.nPlug.Stats().Bookmarks
		for range bookmarkCycles {
			ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
			n := BmNote{Body: "far"}
			ok(t, e.far.WithContext(fly.NoAwait(ctx)).Create(&n))
			if !sees(t, flypg.WithBookmark(context.Background(), flypg.BookmarkFrom(ctx)), e.near, n.ID) {
				t.Fatalf("the near region missed note %d", n.ID)
			}
		}
		after := e.nPlug.Stats().Bookmarks
		if local := (after.Satisfied + after.Waited) - (before.Satisfied + before.Waited); local == 0 {
			t.Errorf("no read under a bookmark ran on the near replica: %+v -> %+v", before, after)
		}
	})

	t.Run("satisfied bookmark costs no query", func(t *testing.T) {
		ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
		n := BmNote{Body: "awaited"}
		ok(t, e.near.WithContext(ctx).Create(&n)) // waits until the near replica has it
		before := e.nPlug.Stats()
		if !sees(t, ctx, e.near, n.ID) {
			t.Fatal("missed own write")
		}
		after := e.nPlug.Stats()
		if after.Tracker.Looks != before.Tracker.Looks || after.Bookmarks.Satisfied != before.Bookmarks.Satisfied+1 {
			t.Fatalf("a read under a replayed bookmark: looks %d -> %d, satisfied %d -> %d",
				before.Tracker.Looks, after.Tracker.Looks, before.Bookmarks.Satisfied, after.Bookmarks.Satisfied)
		}
	})

	t.Run("http", func(t *testing.T) { testBookmarksHTTP(t, e) })

	// Last: it cuts the near replica's replication (restored after).
	t.Run("replica cut off reads on the primary within the bound", func(t *testing.T) {
		const bound = 200 * time.Millisecond
		e := newBookmarkEnv(t, c, bound) // a database of its own
		link := c.ReplicationLink(0)
		noErr(t, link.Cut())
		defer link.Restore()

		ctx := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
		n := BmNote{Body: "cut"}
		ok(t, e.near.WithContext(fly.NoAwait(ctx)).Create(&n))
		before := e.nPlug.Stats().Bookmarks
		start := time.Now()
		if !sees(t, ctx, e.near, n.ID) {
			t.Fatal("the session missed its write with its replica cut off")
		}
		took := time.Since(start)
		if got := e.nPlug.Stats().Bookmarks.Primary - before.Primary; got != 1 {
			t.Fatalf("%d reads ran on the primary, want 1", got)
		}
		if took < bound || took > bound+5*time.Second {
			t.Errorf("the read took %s with BookmarkWait %s (AwaitTimeout 10s)", took, bound)
		}
		if sees(t, context.Background(), e.near, n.ID) {
			t.Fatal("without the session the cut-off replica has the write: the test proves nothing")
		}
	})
}

// The regions of the bookmark tests: the primary region and two replica
// regions, the second one behind.
const (
	regionNear = "ams"
	regionFar  = "syd"
)

// farApplyDelay holds back the far replica's replay of every commit
// (recovery_min_apply_delay): long enough that a read there right after a
// write elsewhere misses it every time.
const farApplyDelay = 400 * time.Millisecond

// BmNote is the model of the bookmark tests.
type BmNote struct {
	ID   uint
	Body string
}

// bmEnv is one database on a three-node cluster seen from three regions.
type bmEnv struct {
	t       *testing.T
	c       *pgtest.Cluster
	primary *gorm.DB // primary-region app
	near    *gorm.DB // replica region on replica1, current
	far     *gorm.DB // replica region on replica2, behind by farApplyDelay
	pPlug   *flypg.Plugin
	nPlug   *flypg.Plugin
	fPlug   *flypg.Plugin
}

// startBookmarkCluster starts a primary with two replicas: replica1's
// replication goes through a link (tests cut it), replica2 applies commits
// farApplyDelay late.
func startBookmarkCluster(t *testing.T) *pgtest.Cluster {
	t.Helper()
	c := ownCluster(t, pgtest.Options{Replicas: 2, ReplicationLinks: true})
	far := openGORM(t, c.Replicas[1].DSN("postgres"))
	ok(t, far.Exec("ALTER SYSTEM SET recovery_min_apply_delay = '"+farApplyDelay.String()+"'"))
	ok(t, far.Exec("SELECT pg_reload_conf()"))
	var delay string
	testkit.Eventually(t, 10*time.Second, func() bool {
		ok(t, far.Raw("SHOW recovery_min_apply_delay").Scan(&delay))
		return delay != "0"
	}, "recovery_min_apply_delay in effect")
	return c
}

// newBookmarkEnv creates a database on c and the three regions' apps on
// it; bookmarkWait is the replica plugins' BookmarkWait (0: automatic).
func newBookmarkEnv(t *testing.T, c *pgtest.Cluster, bookmarkWait time.Duration) *bmEnv {
	t.Helper()
	name := createDatabase(t, c, "bm")
	e := &bmEnv{t: t, c: c}
	var addr string
	e.primary, e.pPlug, addr = servePrimary(t, c.Primary.DSN(name))
	replica := func(i int, region string) (*gorm.DB, *flypg.Plugin) {
		db := openGORM(t, c.Replicas[i].DSN(name))
		p := flypg.New(flypg.Config{Region: region, PrimaryRegion: primaryRegion, PrimaryAddr: addr,
			Secret: testkit.Secret, AwaitTimeout: 10 * time.Second, BookmarkWait: bookmarkWait})
		noErr(t, db.Use(p))
		t.Cleanup(func() { p.Close() })
		return db, p
	}
	e.near, e.nPlug = replica(0, regionNear)
	e.far, e.fPlug = replica(1, regionFar)
	noErr(t, e.primary.WithContext(fly.Local(context.Background())).AutoMigrate(&BmNote{}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	noErr(t, c.WaitReplicated(ctx))
	return e
}

// sees reports whether db, under ctx, reads the note with id.
func sees(t *testing.T, ctx context.Context, db *gorm.DB, id uint) bool {
	t.Helper()
	var n []BmNote
	ok(t, db.WithContext(ctx).Where("id = ?", id).Find(&n))
	return len(n) == 1
}
