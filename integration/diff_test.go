package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/pgtest"
)

// The differential suite runs every case twice — through flypg in a replica
// region (a real streaming replica, a real executor on the primary) and
// through plain GORM on the primary — and requires the two runs to agree on
// everything a caller can observe: the values each call returned,
// RowsAffected, error classes (errors.Is with TranslateError, SQLSTATEs),
// every read-back after a write, and the final contents of every table.
// After the flypg run, what the replica reads must also be exactly what the
// primary holds.
//
// A case is a few lines: a function of a dc, which records observations
// with rec, res, err and all. Cases are grouped; the groups run in parallel
// lanes, each on its own pair of databases, and the cases of a group run in
// turn on tables emptied before each. A case that shows a known difference
// names what is missing in known and is skipped.

// dcase is one differential case.
type dcase struct {
	name    string
	variant string // the GORM configuration: "" or a key of diffVariants
	known   string // a known difference: why the case is skipped
	run     func(c *dc)
}

// dgroup is a lane's cases.
type dgroup struct {
	name  string
	cases []dcase
}

// diffGroups lists every case of the suite, by area.
func diffGroups() []dgroup {
	return []dgroup{
		{"create", createCases},
		{"upsert", upsertCases},
		{"update", updateCases},
		{"delete", deleteCases},
		{"assoc", assocCases},
		{"hooks", hookCases},
		{"tx", txCases},
		{"raw", rawCases},
		{"types", typeCases},
		{"config", configCases},
		{"misc", miscCases},
	}
}

// dvariant is a GORM configuration cases can run under, applied to both
// handles.
type dvariant struct {
	gorm  func(*gorm.Config)
	setup func(testing.TB, *gorm.DB)
}

var diffVariants = map[string]dvariant{
	"":        {},
	"prepare": {gorm: func(c *gorm.Config) { c.PrepareStmt = true }},
	"skiptx":  {gorm: func(c *gorm.Config) { c.SkipDefaultTransaction = true }},
	// An application callback between GORM's INSERT and its after-hooks,
	// which writes an audit row in the implicit transaction and may fail.
	"appcb": {setup: registerGadgetCallback},
}

// diffModels are migrated into both databases of a lane.
func diffModels() []any {
	return append(allModels(), &Gadget{}, &GadgetAudit{}, &Unscannable{}, &Typed{}, &Event{})
}

// diffSetupSQL runs on both databases before the models are migrated.
var diffSetupSQL = []string{
	"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
	"CREATE SEQUENCE diff_seq",
	"CREATE UNLOGGED TABLE scratch_unlogged (id int PRIMARY KEY, note text)",
	`CREATE TABLE deferred_parents (id int PRIMARY KEY)`,
	`CREATE TABLE deferred_children (id serial PRIMARY KEY, parent_id int NOT NULL
		REFERENCES deferred_parents (id) DEFERRABLE INITIALLY DEFERRED)`,
}

// TestDifferential is the suite. It is not a parallel test: its lanes
// run at once among themselves, and the package's timing-sensitive fault
// tests run after it, not beside it.
func TestDifferential(t *testing.T) {
	c := requireCluster(t)
	total := 0
	for _, g := range diffGroups() {
		total += len(g.cases)
	}
	t.Logf("%d differential cases", total)
	// Lanes run four at a time: most of a case's time is spent waiting for
	// replication, which lanes can share. They are not parallel subtests,
	// so that the package's -parallel limit does not serialize them; four
	// keeps the machine's other tests from starving.
	var wg sync.WaitGroup
	lanes := make(chan struct{}, 4)
	for _, g := range diffGroups() {
		wg.Go(func() {
			lanes <- struct{}{}
			defer func() { <-lanes }()
			t.Run(g.name, func(t *testing.T) {
				l := newLane(t, c, g.name)
				for _, dc := range g.cases {
					t.Run(dc.name, func(t *testing.T) { l.run(t, dc) })
				}
			})
		})
	}
	wg.Wait()
}

// lane is one pair of databases: the one flypg's replica region uses (its
// executor serves it on the primary) and a reference database that plain
// GORM uses on the primary.
type lane struct {
	t        *testing.T
	cluster  *pgtest.Cluster
	flypgDB  string
	refDB    string
	addr     string // the executor
	reset    string
	snapSQL  string
	mu       sync.Mutex
	variants map[string]*pair
	admin    map[string]*gorm.DB // plain GORM on each database, for resets and snapshots
}

// pair is the two handles of a variant.
type pair struct {
	flypg *gorm.DB // replica region, through the plugin
	plain *gorm.DB // plain GORM on the reference database
	plug  *flypg.Plugin
}

func newLane(t *testing.T, c *pgtest.Cluster, name string) *lane {
	t.Helper()
	l := &lane{t: t, cluster: c, variants: map[string]*pair{}, admin: map[string]*gorm.DB{}}
	l.flypgDB = createDatabase(t, c, "diff_"+name)
	l.refDB = createDatabase(t, c, "diffref_"+name)
	for _, db := range []string{l.flypgDB, l.refDB} {
		admin := openGORM(t, c.Primary.DSN(db))
		for _, s := range diffSetupSQL {
			ok(t, admin.Exec(s))
		}
		if err := admin.AutoMigrate(diffModels()...); err != nil {
			t.Fatalf("migrate %s: %v", db, err)
		}
		l.admin[db] = admin
	}
	// Every table is emptied before a case; the permanent ones are
	// compared after it (a replica cannot read unlogged tables).
	var all []struct {
		Name      string
		Permanent bool
	}
	ok(t, l.admin[l.flypgDB].Raw(`SELECT relname::text AS name, relpersistence = 'p' AS permanent FROM pg_class
		WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1`).Scan(&all))
	var deletes, snaps []string
	for _, tb := range all {
		deletes = append(deletes, fmt.Sprintf("DELETE FROM %q", tb.Name))
		if tb.Permanent {
			snaps = append(snaps, fmt.Sprintf(`SELECT %s::text AS t, coalesce(jsonb_agg(to_jsonb(x) ORDER BY to_jsonb(x)::text), '[]'::jsonb)::text AS rows FROM %q x`, quote(tb.Name), tb.Name))
		}
	}
	// DELETE with foreign keys unchecked, and every sequence back to 1: on
	// tables this small, far cheaper than TRUNCATE's new files.
	l.reset = "SET LOCAL session_replication_role = replica; " + strings.Join(deletes, "; ") +
		"; SELECT setval(oid::regclass, 1, false) FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace"
	l.snapSQL = strings.Join(snaps, " UNION ALL ") + " ORDER BY 1"

	// The primary region's app serves the executor for flypg's database.
	_, _, l.addr = servePrimary(t, c.Primary.DSN(l.flypgDB))
	l.waitReplicated(t)
	return l
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// pair returns the handles of a variant, opening them on first use.
func (l *lane) pair(t *testing.T, name string) *pair {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.variants[name]; ok {
		return p
	}
	v, found := diffVariants[name]
	if !found {
		t.Fatalf("unknown variant %q", name)
	}
	p := &pair{
		flypg: openGORM(l.t, l.cluster.Replicas[0].DSN(l.flypgDB), v.gorm),
		plain: openGORM(l.t, l.cluster.Primary.DSN(l.refDB), v.gorm),
	}
	plug := flypg.New(flypg.Config{
		Region: replicaRegion, PrimaryRegion: primaryRegion,
		PrimaryAddr: l.addr, Secret: testkit.Secret, AwaitTimeout: 20 * time.Second,
	})
	if err := p.flypg.Use(plug); err != nil {
		l.t.Fatal(err)
	}
	p.plug = plug
	l.t.Cleanup(func() { plug.Close() })
	if v.setup != nil {
		v.setup(l.t, p.flypg)
		v.setup(l.t, p.plain)
	}
	l.variants[name] = p
	return p
}

func (l *lane) waitReplicated(t testing.TB) {
	t.Helper()
	waitReplicated(t, l.cluster)
}

// run runs one case both ways and compares.
func (l *lane) run(t *testing.T, dcase dcase) {
	if dcase.known != "" {
		t.Skip("known difference: " + dcase.known)
	}
	p := l.pair(t, dcase.variant)
	for _, db := range []string{l.flypgDB, l.refDB} {
		if err := l.admin[db].Transaction(func(tx *gorm.DB) error {
			if err := tx.Exec("SET LOCAL lock_timeout = '20s'").Error; err != nil {
				return err
			}
			return tx.Exec(l.reset).Error
		}); err != nil {
			t.Fatalf("reset %s: %v", db, err)
		}
	}
	// The replica must have replayed the reset before the case reads.
	var at string
	ok(t, l.admin[l.flypgDB].Raw("SELECT pg_current_wal_lsn()::text").Scan(&at))
	pos, err := lsn.Parse(at)
	noErr(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	noErr(t, p.plug.Tracker().Wait(ctx, pos))

	got := &dc{t: t, db: p.flypg, side: "flypg"}
	dcase.run(got)
	if t.Failed() {
		return
	}
	// Right after the case, the replica holds what the primary holds.
	onReplica, onPrimary := l.rawSnapshot(t, p.flypg), l.rawSnapshot(t, l.admin[l.flypgDB])
	diffLines(t, "tables read on the replica vs the primary (flypg's database)", onReplica, onPrimary)

	want := &dc{t: t, db: p.plain, side: "plain"}
	dcase.run(want)
	if t.Failed() {
		return
	}
	diffLines(t, "observations (flypg in a replica region vs plain GORM on the primary)", got.lines, want.lines)
	diffLines(t, "final rows (flypg vs plain GORM)", normalizeRows(t, onPrimary), normalizeRows(t, l.rawSnapshot(t, l.admin[l.refDB])))
}

// rawSnapshot returns every table's rows as one JSON line per table.
func (l *lane) rawSnapshot(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var rows []struct {
		T    string
		Rows string
	}
	ok(t, db.Raw(l.snapSQL).Scan(&rows))
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.T + ": " + r.Rows
	}
	return out
}

// normalizeRows turns table lines into sorted row lines, with generated
// UUIDs and commit times replaced by placeholders.
func normalizeRows(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	for _, line := range lines {
		table, rowsJSON, _ := strings.Cut(line, ": ")
		var rows []any
		if err := json.Unmarshal([]byte(rowsJSON), &rows); err != nil {
			t.Fatal(err)
		}
		var tl []string
		for _, r := range rows {
			b, _ := json.Marshal(normalize(r))
			tl = append(tl, table+": "+string(b))
		}
		slices.Sort(tl)
		out = append(out, tl...)
	}
	return out
}

// generatedTimes are the keys whose values are commit times, in rows and in
// GORM's structs.
var generatedTimes = map[string]bool{
	"created_at": true, "updated_at": true, "placed_at": true, "deleted_at": true,
	"CreatedAt": true, "UpdatedAt": true, "PlacedAt": true, "DeletedAt": true,
}

// normalize replaces generated UUIDs and commit times in a decoded JSON
// value.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if generatedTimes[k] && e != nil {
				if s, isString := e.(string); !isString || !strings.HasPrefix(s, "0001-01-01") {
					x[k] = "<time>"
					continue
				}
			}
			x[k] = normalize(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	case string:
		if uuidRE.MatchString(x) {
			return "<uuid>"
		}
	}
	return v
}

// dc is a case's view of one run.
type dc struct {
	t     *testing.T
	db    *gorm.DB // flypg in a replica region, or plain GORM on the primary
	side  string   // "flypg" or "plain"
	lines []string
}

// rec records a value.
func (c *dc) rec(label string, v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatalf("%s: %v", label, err)
	}
	var decoded any
	if err := json.Unmarshal(b, &decoded); err != nil {
		c.t.Fatalf("%s: %v", label, err)
	}
	b, _ = json.Marshal(normalize(decoded))
	c.lines = append(c.lines, label+": "+string(b))
}

// res records a GORM call's outcome: its error class and RowsAffected.
func (c *dc) res(label string, tx *gorm.DB) *gorm.DB {
	c.t.Helper()
	c.lines = append(c.lines, fmt.Sprintf("%s: error %s, rows %d", label, errClass(tx.Error), tx.RowsAffected))
	return tx
}

// err records an error's class.
func (c *dc) err(label string, err error) {
	c.lines = append(c.lines, fmt.Sprintf("%s: error %s", label, errClass(err)))
}

// all reads every row of a model's table (soft-deleted ones too) right
// after the case's writes, and records them. dest is a pointer to a slice;
// order defaults to the first column.
func (c *dc) all(label string, dest any, order ...string) {
	c.t.Helper()
	o := "1"
	if len(order) > 0 {
		o = order[0]
	}
	c.res(label+" read", c.db.Unscoped().Order(o).Find(dest))
	c.rec(label, dest)
}
