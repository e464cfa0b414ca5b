package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/migration"
)

func tagList(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var names []string
	ok(t, db.Raw("SELECT name FROM tags ORDER BY name").Scan(&names))
	return names
}

func wantTagList(t *testing.T, db *gorm.DB, want ...string) {
	t.Helper()
	if got := tagList(t, db); !slices.Equal(got, want) {
		t.Fatalf("tags read back as %v, want %v", got, want)
	}
}

// scenarioRaw: Exec of write SQL and DDL, Raw(...).Scan of SELECTs, of
// INSERT/UPDATE ... RETURNING and of CTEs that write, Rows() and Row().
func scenarioRaw(t *testing.T, db *gorm.DB, tr *transcript) {
	res := ok(t, db.Exec("INSERT INTO tags (name) VALUES (?), (?)", "a", "b"))
	if res.RowsAffected != 2 {
		t.Fatalf("Exec INSERT affected %d rows", res.RowsAffected)
	}
	wantTagList(t, db, "a", "b")

	res = ok(t, db.Exec("UPDATE tags SET name = upper(name) WHERE name = ?", "a"))
	if res.RowsAffected != 1 {
		t.Fatalf("Exec UPDATE affected %d rows", res.RowsAffected)
	}
	wantTagList(t, db, "A", "b")

	var id uint
	ok(t, db.Raw("INSERT INTO tags (name) VALUES (?) RETURNING id", "c").Scan(&id))
	if id == 0 {
		t.Fatal("INSERT ... RETURNING returned no id")
	}
	var c Tag
	ok(t, db.First(&c, id))
	if c.Name != "c" {
		t.Fatalf("row returned by INSERT ... RETURNING read back as %+v", c)
	}
	tr.add("returning", []any{id, c.Name})

	var many []Tag
	ok(t, db.Raw("INSERT INTO tags (name) VALUES ('d'), ('e') RETURNING id, name").Scan(&many))
	if len(many) != 2 || many[0].ID == 0 || many[1].Name != "e" {
		t.Fatalf("multi-row RETURNING: %+v", many)
	}
	wantTagList(t, db, "A", "b", "c", "d", "e")
	tr.add("returning rows", many)

	var cteID uint
	ok(t, db.Raw("WITH x AS (INSERT INTO tags (name) VALUES (?) RETURNING id) SELECT id FROM x", "f").Scan(&cteID))
	var f Tag
	ok(t, db.First(&f, cteID))
	if f.Name != "f" {
		t.Fatalf("row written by a CTE read back as %+v", f)
	}
	var changed int
	ok(t, db.Raw("WITH u AS (UPDATE tags SET name = name || '!' WHERE name IN ('d', 'e') RETURNING 1) SELECT count(*) FROM u").Scan(&changed))
	if changed != 2 {
		t.Fatalf("updating CTE changed %d rows", changed)
	}
	wantTagList(t, db, "A", "b", "c", "d!", "e!", "f")
	tr.add("cte", []any{cteID, changed})

	res = ok(t, db.Exec("DELETE FROM tags WHERE name LIKE ?", "%!"))
	if res.RowsAffected != 2 {
		t.Fatalf("Exec DELETE affected %d rows", res.RowsAffected)
	}
	wantTagList(t, db, "A", "b", "c", "f")

	// DDL through Exec, and its effect.
	ok(t, db.Exec("CREATE INDEX tags_upper_name ON tags (upper(name))"))
	var idx int64
	ok(t, db.Raw("SELECT count(*) FROM pg_indexes WHERE indexname = 'tags_upper_name'").Scan(&idx))
	if idx != 1 {
		t.Fatal("index created by Exec not visible")
	}

	ok(t, db.Exec("UPDATE tags SET name = 'x1' WHERE name = 'b'"))
	ok(t, db.Exec("UPDATE tags SET name = 'x2' WHERE name = 'c'"))
	wantTagList(t, db, "A", "f", "x1", "x2")

	// Named arguments.
	ok(t, db.Exec("UPDATE tags SET name = @new WHERE name = @old", sql.Named("new", "x3"), sql.Named("old", "x2")))
	wantTagList(t, db, "A", "f", "x1", "x3")

	// Rows() and Row() over raw SQL.
	rows, err := db.Raw("SELECT id, name FROM tags ORDER BY id").Rows()
	noErr(t, err)
	var seen []string
	for rows.Next() {
		var tg Tag
		noErr(t, db.ScanRows(rows, &tg))
		seen = append(seen, fmt.Sprintf("%d:%s", tg.ID, tg.Name))
	}
	noErr(t, rows.Err())
	noErr(t, rows.Close())
	var n int
	noErr(t, db.Raw("SELECT count(*) FROM tags").Row().Scan(&n))
	if n != len(seen) || n != 4 || seen[3] != fmt.Sprintf("%d:f", cteID) {
		t.Fatalf("Rows saw %v, Row counted %d", seen, n)
	}
	tr.add("rows", seen)
}

// TestReadsStayLocal: every kind of read through the replica-region
// handle — Find, First, Take, Last, Count, Pluck, Preload, Joins, Rows(),
// Scan, Raw SELECT and WITH — runs on the local replica (no round trip to
// the executor, no replication wait) and returns what plain GORM reads on
// the primary.
func TestReadsStayLocal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Seed through the plugin.
	acme := Company{Name: "Acme"}
	ok(t, e.replica.Create(&acme))
	for i, name := range []string{"ann", "ben", "cat", "dov", "eve"} {
		u := User{Name: name, Email: name + "@example.com", Age: 20 + i, CompanyID: &acme.ID,
			Tags: []Tag{{Name: "t-" + name}}, Profile: &Profile{Bio: "bio " + name}}
		ok(t, e.replica.Create(&u))
	}

	type result struct {
		name string
		run  func(db *gorm.DB) any
	}
	reads := []result{
		{"Find", func(db *gorm.DB) any { var us []User; ok(t, db.Order("id").Find(&us)); return rowsOf(us) }},
		{"First", func(db *gorm.DB) any { var u User; ok(t, db.First(&u)); return rowOf(u) }},
		{"Take", func(db *gorm.DB) any { var u User; ok(t, db.Where("name = ?", "cat").Take(&u)); return rowOf(u) }},
		{"Last", func(db *gorm.DB) any { var u User; ok(t, db.Last(&u)); return rowOf(u) }},
		{"Count", func(db *gorm.DB) any { var n int64; ok(t, db.Model(&User{}).Where("age > ?", 21).Count(&n)); return n }},
		{"Pluck", func(db *gorm.DB) any {
			var s []string
			ok(t, db.Model(&User{}).Order("name DESC").Pluck("email", &s))
			return s
		}},
		{"Preload", func(db *gorm.DB) any {
			var us []User
			ok(t, db.Preload("Tags").Preload("Profile").Preload("Company").Order("id").Find(&us))
			var out []string
			for _, u := range us {
				out = append(out, fmt.Sprintf("%s/%s/%s/%s", u.Name, u.Company.Name, u.Profile.Bio, join(tagNames(u.Tags))))
			}
			return out
		}},
		{"Joins", func(db *gorm.DB) any {
			var us []User
			ok(t, db.Joins("Company").Joins("Profile").Where(`"Profile".bio LIKE ?`, "%e%").Order("users.id").Find(&us))
			var out []string
			for _, u := range us {
				out = append(out, u.Name+"@"+u.Company.Name)
			}
			return out
		}},
		{"JoinsTable", func(db *gorm.DB) any {
			var out []struct {
				User string
				Tag  string
			}
			ok(t, db.Table("users").Select("users.name AS user, tags.name AS tag").
				Joins("JOIN user_tags ON user_tags.user_id = users.id").
				Joins("JOIN tags ON tags.id = user_tags.tag_id").Order("users.id").Scan(&out))
			return out
		}},
		{"Group", func(db *gorm.DB) any {
			var out []struct {
				CompanyID uint
				N         int
				MaxAge    int
			}
			ok(t, db.Model(&User{}).Select("company_id, count(*) AS n, max(age) AS max_age").Group("company_id").Scan(&out))
			return out
		}},
		{"Rows", func(db *gorm.DB) any {
			rows, err := db.Model(&User{}).Where("age >= ?", 22).Order("id").Rows()
			noErr(t, err)
			defer rows.Close()
			var out []string
			for rows.Next() {
				var u User
				noErr(t, db.ScanRows(rows, &u))
				out = append(out, u.Name)
			}
			noErr(t, rows.Err())
			return out
		}},
		{"RawSelect", func(db *gorm.DB) any {
			var out []string
			ok(t, db.Raw("SELECT name FROM users WHERE age BETWEEN ? AND ? ORDER BY name", 21, 23).Scan(&out))
			return out
		}},
		{"RawWith", func(db *gorm.DB) any {
			var n int
			ok(t, db.Raw("WITH young AS (SELECT * FROM users WHERE age < 23) SELECT count(*) FROM young").Scan(&n))
			return n
		}},
		{"Subquery", func(db *gorm.DB) any {
			var s []string
			ok(t, db.Model(&User{}).Where("id IN (?)", db.Table("profiles").Select("user_id").Where("bio <> ''")).Order("id").Pluck("name", &s))
			return s
		}},
	}
	for _, r := range reads {
		var got any
		rpcs, waits := e.counted(func() { got = r.run(e.replica) })
		if rpcs != 0 || waits != 0 {
			t.Errorf("%s through the replica-region handle: %d round trips to the executor and %d waits, want a local read", r.name, rpcs, waits)
		}
		want := r.run(e.plain)
		if g, w := jsonOf(t, got), jsonOf(t, want); g != w {
			t.Errorf("%s: replica region read %v, plain GORM on the primary %v", r.name, got, want)
		}
		if g := jsonOf(t, got); g == "null" || g == "[]" || g == "0" {
			t.Errorf("%s read nothing: the test data is wrong", r.name)
		}
	}
	// And they really ran on the standby.
	if !inRecovery(t, e.replica) {
		t.Error("a raw SELECT through the replica-region handle did not run on the replica")
	}
}

func rowsOf(us []User) []userRow {
	var out []userRow
	for _, u := range us {
		out = append(out, rowOf(u))
	}
	return out
}

// TestRouting: which statements the replica-region handle sends to the
// primary and which it keeps local, seen from where they ran
// (pg_is_in_recovery()) and from the executor's round trips.
func TestRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ok(t, e.replica.Create(&Widget{Name: "w", Count: 1}))

	for _, tc := range []struct {
		name      string
		run       func(db *gorm.DB) error
		onPrimary bool
		write     bool
	}{
		{"raw SELECT stays local", func(db *gorm.DB) error {
			return db.Raw("SELECT pg_is_in_recovery()").Scan(new(bool)).Error
		}, false, false},
		{"UsePrimary on a raw read", func(db *gorm.DB) error {
			var rec bool
			if err := db.Clauses(flypg.UsePrimary).Raw("SELECT pg_is_in_recovery()").Scan(&rec).Error; err != nil {
				return err
			}
			if rec {
				return fmt.Errorf("UsePrimary read ran on a server in recovery")
			}
			return nil
			// Raw SQL sent to the primary by hand may write (through a
			// function), so it waits like a write.
		}, true, true},
		{"UsePrimary on a GORM query", func(db *gorm.DB) error {
			var w Widget
			return db.Clauses(flypg.UsePrimary).First(&w, "name = ?", "w").Error
		}, true, false},
		{"UsePrimary on a side-effecting SELECT", func(db *gorm.DB) error {
			// nextval looks like a read; the override sends it where it
			// can run.
			var n int64
			return db.Clauses(flypg.UsePrimary).Raw("SELECT nextval('widgets_id_seq')").Scan(&n).Error
		}, true, true},
		{"SELECT ... FOR UPDATE outside a transaction", func(db *gorm.DB) error {
			var w Widget
			return db.Clauses(clause.Locking{Strength: "UPDATE"}).First(&w, "name = ?", "w").Error
		}, true, false},
		{"UseLocal keeps a raw read local", func(db *gorm.DB) error {
			var rec bool
			if err := db.Clauses(flypg.UseLocal).Raw("SELECT pg_is_in_recovery()").Scan(&rec).Error; err != nil {
				return err
			}
			if !rec {
				return fmt.Errorf("UseLocal read ran on the primary")
			}
			return nil
		}, false, false},
		{"Raw INSERT ... RETURNING", func(db *gorm.DB) error {
			var id uint
			if err := db.Raw("INSERT INTO widgets (name) VALUES ('returned') RETURNING id").Scan(&id).Error; err != nil {
				return err
			}
			if id == 0 {
				return fmt.Errorf("no id returned")
			}
			return nil
		}, true, true},
		{"Raw CTE that writes", func(db *gorm.DB) error {
			var id uint
			return db.Raw("WITH x AS (INSERT INTO widgets (name) VALUES ('cte') RETURNING id) SELECT id FROM x").Scan(&id).Error
		}, true, true},
		{"Rows() of INSERT ... RETURNING", func(db *gorm.DB) error {
			rows, err := db.Raw("INSERT INTO widgets (name) VALUES ('r1'), ('r2') RETURNING name").Rows()
			if err != nil {
				return err
			}
			defer rows.Close()
			var names []string
			for rows.Next() {
				var n string
				if err := rows.Scan(&n); err != nil {
					return err
				}
				names = append(names, n)
			}
			if fmt.Sprint(names) != "[r1 r2]" {
				return fmt.Errorf("returned %v", names)
			}
			return rows.Err()
		}, true, true},
		{"Rows() of a UsePrimary query", func(db *gorm.DB) error {
			rows, err := db.Clauses(flypg.UsePrimary).Model(&Widget{}).Order("id").Rows()
			if err != nil {
				return err
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				var w Widget
				if err := db.ScanRows(rows, &w); err != nil {
					return err
				}
				n++
			}
			if n == 0 {
				return fmt.Errorf("no rows")
			}
			return rows.Err()
		}, true, false},
		{"FirstOrCreate that finds", func(db *gorm.DB) error {
			var w Widget
			if err := db.Where(Widget{Name: "w"}).FirstOrCreate(&w).Error; err != nil {
				return err
			}
			if w.Count != 1 {
				return fmt.Errorf("found %+v", w)
			}
			return nil
		}, false, false},
		{"FirstOrCreate that creates", func(db *gorm.DB) error {
			var w Widget
			if err := db.Where(Widget{Name: "foc"}).Attrs(Widget{Count: 5}).FirstOrCreate(&w).Error; err != nil {
				return err
			}
			var got Widget
			if err := db.First(&got, w.ID).Error; err != nil || got.Count != 5 {
				return fmt.Errorf("created %+v, read back %+v: %v", w, got, err)
			}
			return nil
		}, true, true},
		{"Exec of write SQL", func(db *gorm.DB) error {
			return db.Exec("UPDATE widgets SET count = count + 1").Error
		}, true, true},
		{"Update", func(db *gorm.DB) error {
			return db.Model(&Widget{}).Where("name = ?", "w").Update("count", 9).Error
		}, true, true},
	} {
		rpcs, waits := e.counted(func() {
			if err := tc.run(e.replica); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		})
		if tc.onPrimary != (rpcs > 0) {
			t.Errorf("%s: %d round trips to the executor; want on primary = %v", tc.name, rpcs, tc.onPrimary)
		}
		// A write (or raw SQL sent to the primary by hand) waits for
		// replication; a read GORM built, even on the primary, does not.
		if want := uint64(0); tc.write {
			if waits != 1 {
				t.Errorf("%s: %d replication waits, want 1", tc.name, waits)
			}
		} else if waits != want {
			t.Errorf("%s: %d replication waits, want none for a read", tc.name, waits)
		}
	}
}

// TestMigrationThroughPlugin: the migration package's SQL applied through
// the replica-region handle is forwarded to the primary (the replica cannot
// run DDL), and the function it creates then answers locally on the
// replica. Down removes it the same way.
func TestMigrationThroughPlugin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	exists := func(db *gorm.DB) bool {
		var n int64
		ok(t, db.Raw("SELECT count(*) FROM pg_proc WHERE proname = 'watch_for_lsn_change'").Scan(&n))
		return n == 1
	}
	if exists(e.plain) {
		t.Fatal("function exists before the migration")
	}
	rpcs, waits := e.counted(func() { noErr(t, migration.UpGORM(e.replica)) })
	if rpcs == 0 || waits == 0 {
		t.Fatalf("UpGORM through the replica-region plugin: %d round trips, %d waits; want forwarded and awaited", rpcs, waits)
	}
	if !exists(e.plain) {
		t.Fatal("function missing on the primary after UpGORM")
	}
	if !exists(e.replica) {
		t.Fatal("function missing on the replica right after UpGORM")
	}
	// It answers on the replica: the replay position there, as text.
	var replayed *string
	rpcs, _ = e.counted(func() {
		ok(t, e.replica.Raw("SELECT watch_for_lsn_change(?, 1)", "0/0").Scan(&replayed))
	})
	if replayed == nil || *replayed == "" {
		t.Fatal("watch_for_lsn_change on the replica returned NULL")
	}
	if rpcs != 0 {
		t.Fatalf("calling the function took %d round trips; it should answer locally", rpcs)
	}
	var fromPrimary bool
	ok(t, e.replica.Raw("SELECT pg_is_in_recovery()").Scan(&fromPrimary))
	if !fromPrimary {
		t.Fatal("the local handle is not on the replica")
	}
	// Idempotent, and reversible through the plugin too.
	noErr(t, migration.UpGORM(e.replica))
	noErr(t, migration.DownGORM(e.replica))
	if exists(e.replica) || exists(e.plain) {
		t.Fatal("function still exists after DownGORM")
	}
	noErr(t, migration.UpGORM(e.replica.WithContext(context.Background())))
	if !exists(e.replica) {
		t.Fatal("function missing after UpGORM following DownGORM")
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	noErr(t, err)
	return string(b)
}
