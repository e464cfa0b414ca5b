package integration

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
)

// transcript records what a scenario observed, one labelled JSON line per
// observation, so that two runs can be compared line by line.
type transcript struct{ lines []string }

func (tr *transcript) add(label string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("transcript %s: %v", label, err))
	}
	tr.lines = append(tr.lines, label+": "+string(b))
}

// scenario runs operations on db, asserting read-your-writes after each
// write, and records normalized observations in tr.
type scenario func(t *testing.T, db *gorm.DB, tr *transcript)

// runCompared runs sc through e's replica-region handle and through plain
// GORM on a fresh reference database, and requires:
//   - equal transcripts (IDs, values, association sets);
//   - the replica-side read of every table to be exactly the primary's
//     (same database, read right after the scenario's last write);
//   - both databases to hold the same rows, up to generated UUIDs and
//     timestamps.
func runCompared(t *testing.T, e *env, sc scenario) {
	t.Helper()
	var got, want transcript
	sc(t, e.replica, &got)
	if t.Failed() {
		return
	}
	ref := newPlainDB(t, e.gormOpts)
	sc(t, ref, &want)
	if t.Failed() {
		return
	}
	diffLines(t, "transcript (replica region via plugin vs plain GORM on the primary)", got.lines, want.lines)

	// Three handles, same data: what the replica-region app reads locally
	// is what is on the primary.
	for _, table := range tables(t, e.plain) {
		r, p := tableJSON(t, e.replica, table), tableJSON(t, e.plain, table)
		if r != p {
			t.Errorf("table %s: replica reads\n%s\nprimary has\n%s", table, r, p)
		}
	}
	// Same operations, same rows.
	gotRows, wantRows := snapshot(t, e.replica), snapshot(t, ref)
	diffLines(t, "normalized rows (replica-region database vs reference database)", gotRows, wantRows)
	t.Logf("compared %d observations and %d rows with plain GORM", len(got.lines), len(gotRows))
}

func diffLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("%s differs at line %d:\n got: %s\nwant: %s", what, i+1, g, w)
			return
		}
	}
}

func tables(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var names []string
	ok(t, db.Raw(`SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`).Scan(&names))
	if len(names) == 0 {
		t.Fatal("no tables")
	}
	return names
}

// tableJSON returns every row of table as one JSON array, in a stable order.
func tableJSON(t *testing.T, db *gorm.DB, table string) string {
	t.Helper()
	var s string
	ok(t, db.Raw(fmt.Sprintf(`SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY to_jsonb(x)::text), '[]'::jsonb)::text FROM %q x`, table)).Scan(&s))
	return s
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// snapshot returns every row of every table, with the values that
// legitimately differ between two runs (generated UUIDs, commit times)
// replaced by placeholders, sorted.
func snapshot(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var out []string
	for _, table := range tables(t, db) {
		var rows []map[string]any
		if err := json.Unmarshal([]byte(tableJSON(t, db, table)), &rows); err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, r := range rows {
			for k, v := range r {
				switch {
				case v == nil:
				case k == "created_at" || k == "updated_at" || k == "placed_at":
					r[k] = "<time>"
				case k == "deleted_at":
					r[k] = "<deleted>"
				default:
					if s, ok := v.(string); ok && uuidRE.MatchString(s) {
						r[k] = "<uuid>"
					}
				}
			}
			b, _ := json.Marshal(r)
			lines = append(lines, table+": "+string(b))
		}
		slices.Sort(lines)
		out = append(out, lines...)
	}
	return out
}

// ts formats a time for a transcript: the instant, in UTC.
func ts(tm *time.Time) string {
	if tm == nil {
		return "null"
	}
	return tm.UTC().Format(time.RFC3339Nano)
}

// names returns the sorted names of tags.
func tagNames(tags []Tag) []string {
	out := make([]string, 0, len(tags))
	for _, tg := range tags {
		out = append(out, tg.Name)
	}
	slices.Sort(out)
	return out
}

func join(ss []string) string { return strings.Join(ss, ",") }
