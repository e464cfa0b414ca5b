package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// TestScenarios runs each write scenario through the replica-region plugin
// and through plain GORM on the primary, reading back after every write,
// and requires identical results.
func TestScenarios(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sc   scenario
	}{
		{"CreateSaveUpdateDelete", scenarioWrites},
		{"UUIDAndCompositeKeys", scenarioKeys},
		{"JSONB", scenarioJSONB},
		{"ColumnTypes", scenarioColumnTypes},
		{"TimeColumns", scenarioTimes},
		{"UpsertAndBatches", scenarioUpserts},
		{"Hooks", scenarioHooks},
		{"RawSQL", scenarioRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runCompared(t, newEnv(t), tc.sc)
		})
	}
}

// TestGORMConfigs runs scenarios with the GORM options applications turn
// on for speed: prepared statements and no default transaction.
func TestGORMConfigs(t *testing.T) {
	t.Parallel()
	prepare := func(c *gorm.Config) { c.PrepareStmt = true }
	skipTx := func(c *gorm.Config) { c.SkipDefaultTransaction = true }
	for _, tc := range []struct {
		name string
		opts func(*gorm.Config)
		sc   scenario
	}{
		{"PrepareStmt/Writes", prepare, scenarioWrites},
		{"PrepareStmt/Associations", prepare, scenarioAssociations},
		{"PrepareStmt/Transactions", prepare, scenarioTransactions},
		{"SkipDefaultTransaction/Writes", skipTx, scenarioWrites},
		{"SkipDefaultTransaction/Keys", skipTx, scenarioKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runCompared(t, newEnvWith(t, envConfig{gorm: tc.opts}), tc.sc)
		})
	}
}

type userRow struct {
	ID        uint
	Name      string
	Email     string
	Age       int
	CompanyID *uint
	Deleted   bool
}

func rowOf(u User) userRow {
	return userRow{ID: u.ID, Name: u.Name, Email: u.Email, Age: u.Age, CompanyID: u.CompanyID, Deleted: u.DeletedAt.Valid}
}

// readUser reads a user, soft-deleted ones included, right after a write.
func readUser(t *testing.T, db *gorm.DB, id uint) User {
	t.Helper()
	var u User
	ok(t, db.Unscoped().First(&u, id))
	return u
}

func wantUser(t *testing.T, db *gorm.DB, id uint, name string, age int) User {
	t.Helper()
	u := readUser(t, db, id)
	if u.Name != name || u.Age != age {
		t.Fatalf("user %d read back as %q age %d, want %q age %d", id, u.Name, u.Age, name, age)
	}
	return u
}

// scenarioWrites: Create, Save (insert, update, and update of a missing
// row), Updates(map/struct), Update with an expression, UpdateColumn(s),
// Delete with Where (soft), Unscoped delete, FirstOrCreate both ways.
func scenarioWrites(t *testing.T, db *gorm.DB, tr *transcript) {
	carol := User{Name: "Carol", Email: "carol@example.com", Age: 40}
	res := ok(t, db.Create(&carol))
	if res.RowsAffected != 1 || carol.ID == 0 || carol.CreatedAt.IsZero() {
		t.Fatalf("create: rows %d id %d", res.RowsAffected, carol.ID)
	}
	tr.add("create", rowOf(wantUser(t, db, carol.ID, "Carol", 40)))

	dan := User{Name: "Dan", Email: "dan@example.com", Age: 15}
	ok(t, db.Save(&dan)) // no primary key: INSERT
	if dan.ID == 0 {
		t.Fatal("Save (insert path) returned no ID")
	}
	tr.add("save insert", rowOf(wantUser(t, db, dan.ID, "Dan", 15)))
	dan.Name, dan.Age = "Daniel", 16
	res = ok(t, db.Save(&dan)) // primary key set: UPDATE of every column
	if res.RowsAffected != 1 {
		t.Fatalf("Save (update path) affected %d rows", res.RowsAffected)
	}
	tr.add("save update", rowOf(wantUser(t, db, dan.ID, "Daniel", 16)))
	ghost := User{ID: 500, Name: "Ghost", Email: "ghost@example.com"}
	ok(t, db.Save(&ghost)) // no such row: the UPDATE matches nothing, GORM inserts
	tr.add("save missing", rowOf(wantUser(t, db, 500, "Ghost", 0)))

	before := readUser(t, db, carol.ID).UpdatedAt
	res = ok(t, db.Model(&User{ID: carol.ID}).Updates(map[string]any{"name": "Caroline", "age": 41}))
	if res.RowsAffected != 1 {
		t.Fatalf("Updates(map) affected %d rows", res.RowsAffected)
	}
	u := wantUser(t, db, carol.ID, "Caroline", 41)
	if !u.UpdatedAt.After(before) {
		t.Fatalf("Updates did not move updated_at: %v -> %v", before, u.UpdatedAt)
	}
	tr.add("updates map", rowOf(u))

	ok(t, db.Model(&carol).Updates(User{Age: 42})) // struct: non-zero fields only
	tr.add("updates struct", rowOf(wantUser(t, db, carol.ID, "Caroline", 42)))

	ok(t, db.Model(&User{}).Where("id = ?", carol.ID).Update("age", gorm.Expr("age + ?", 1)))
	tr.add("update expr", rowOf(wantUser(t, db, carol.ID, "Caroline", 43)))

	before = readUser(t, db, carol.ID).UpdatedAt
	ok(t, db.Model(&User{ID: carol.ID}).UpdateColumn("age", 50))
	u = wantUser(t, db, carol.ID, "Caroline", 50)
	if !u.UpdatedAt.Equal(before) {
		t.Fatalf("UpdateColumn touched updated_at: %v -> %v", before, u.UpdatedAt)
	}
	ok(t, db.Model(&User{ID: carol.ID}).UpdateColumns(map[string]any{"name": "C.", "age": 51}))
	u = wantUser(t, db, carol.ID, "C.", 51)
	if !u.UpdatedAt.Equal(before) {
		t.Fatalf("UpdateColumns touched updated_at: %v -> %v", before, u.UpdatedAt)
	}
	tr.add("update columns", rowOf(u))

	res = ok(t, db.Model(&User{}).Where("age < ?", 18).Update("age", 18))
	tr.add("batch update rows", res.RowsAffected)
	var minors int64
	ok(t, db.Model(&User{}).Where("age < ?", 18).Count(&minors))
	if res.RowsAffected != 2 || minors != 0 {
		t.Fatalf("batch update affected %d rows, %d minors left", res.RowsAffected, minors)
	}

	// Delete with Where: a soft delete.
	res = ok(t, db.Where("email LIKE ?", "ghost@%").Delete(&User{}))
	if res.RowsAffected != 1 {
		t.Fatalf("Delete with Where affected %d rows", res.RowsAffected)
	}
	var gone User
	if err := db.First(&gone, 500).Error; !errors.Is(err, gorm.ErrRecordNotFound) {
		t.Fatalf("soft-deleted user still found: %v", err)
	}
	g := readUser(t, db, 500)
	if !g.DeletedAt.Valid {
		t.Fatal("soft delete did not set deleted_at")
	}
	var visible int64
	ok(t, db.Model(&User{}).Count(&visible))
	if visible != 2 || countRows(t, db, "users", "") != 3 {
		t.Fatalf("after soft delete: %d visible users, %d rows", visible, countRows(t, db, "users", ""))
	}
	tr.add("soft delete", rowOf(g))

	// Unscoped: a hard delete of the soft-deleted row.
	res = ok(t, db.Unscoped().Delete(&User{}, 500))
	if res.RowsAffected != 1 || countRows(t, db, "users", "id = ?", 500) != 0 {
		t.Fatalf("Unscoped delete: %d rows affected", res.RowsAffected)
	}
	// Soft delete of a loaded row, then Unscoped().Where().Delete.
	ok(t, db.Delete(&dan))
	if readUser(t, db, dan.ID).DeletedAt.Valid != true {
		t.Fatal("Delete(&dan) did not soft-delete")
	}
	ok(t, db.Unscoped().Where("deleted_at IS NOT NULL").Delete(&User{}))
	if n := countRows(t, db, "users", ""); n != 1 {
		t.Fatalf("%d rows left after deleting the soft-deleted ones, want 1", n)
	}
	tr.add("hard delete", countRows(t, db, "users", ""))

	// FirstOrCreate: not found, so created...
	var erin User
	res = ok(t, db.Where(User{Email: "erin@example.com"}).Attrs(User{Name: "Erin", Age: 29}).FirstOrCreate(&erin))
	if erin.ID == 0 || res.RowsAffected != 1 {
		t.Fatalf("FirstOrCreate (create): id %d rows %d", erin.ID, res.RowsAffected)
	}
	wantUser(t, db, erin.ID, "Erin", 29)
	// ...then found, and left alone.
	var again User
	ok(t, db.Where(User{Email: "erin@example.com"}).Attrs(User{Name: "Other", Age: 1}).FirstOrCreate(&again))
	if again.ID != erin.ID || again.Name != "Erin" {
		t.Fatalf("FirstOrCreate (found) returned %+v, want user %d", again, erin.ID)
	}
	// FirstOrCreate with Assign: found, and updated.
	var assigned User
	ok(t, db.Where(User{Email: "erin@example.com"}).Assign(User{Age: 30}).FirstOrCreate(&assigned))
	tr.add("first or create", rowOf(wantUser(t, db, erin.ID, "Erin", 30)))

	var all []User
	ok(t, db.Unscoped().Order("id").Find(&all))
	var rows []userRow
	for _, u := range all {
		rows = append(rows, rowOf(u))
	}
	tr.add("final", rows)
}

type lineRow struct {
	LineNo     int
	SKU        string
	Qty        int
	PriceCents int64
}

func readLines(t *testing.T, db *gorm.DB, orderID string) []lineRow {
	t.Helper()
	var ls []OrderLine
	ok(t, db.Where("order_id = ?", orderID).Order("line_no").Find(&ls))
	out := []lineRow{}
	for _, l := range ls {
		out = append(out, lineRow{l.LineNo, l.SKU, l.Qty, l.PriceCents})
	}
	return out
}

// scenarioKeys: UUID primary keys defaulted by the database (returned into
// the struct, with the defaulted status and commit time), composite
// primary keys (create, update, save, delete, find by key), cascades.
func scenarioKeys(t *testing.T, db *gorm.DB, tr *transcript) {
	u := User{Name: "Kim", Email: "kim@example.com"}
	ok(t, db.Create(&u))

	o := Order{UserID: u.ID, Number: 7}
	ok(t, db.Create(&o))
	if !uuidRE.MatchString(o.ID) {
		t.Fatalf("create did not return the database's UUID: %q", o.ID)
	}
	if o.PlacedAt.IsZero() {
		t.Fatal("create did not return the defaulted placed_at")
	}
	var got Order
	ok(t, db.First(&got, "id = ?", o.ID))
	if got.Number != 7 || got.Status != "new" || got.UserID != u.ID {
		t.Fatalf("order read back as %+v", got)
	}
	if !got.PlacedAt.Equal(o.PlacedAt) {
		t.Fatalf("placed_at returned by INSERT %v, read back %v", o.PlacedAt, got.PlacedAt)
	}
	tr.add("order", []any{got.Number, got.Status, o.Status})

	ok(t, db.Create(&[]OrderLine{
		{OrderID: o.ID, LineNo: 1, SKU: "P-1", Qty: 1, PriceCents: 100},
		{OrderID: o.ID, LineNo: 2, SKU: "P-2", Qty: 2, PriceCents: 200},
		{OrderID: o.ID, LineNo: 3, SKU: "P-3", Qty: 3, PriceCents: 300},
	}))
	if ls := readLines(t, db, o.ID); len(ls) != 3 {
		t.Fatalf("lines read back: %+v", ls)
	}
	tr.add("lines", readLines(t, db, o.ID))

	res := ok(t, db.Model(&OrderLine{OrderID: o.ID, LineNo: 2}).Update("qty", 9))
	if res.RowsAffected != 1 {
		t.Fatalf("update by composite key affected %d rows", res.RowsAffected)
	}
	var l2 OrderLine
	ok(t, db.Where(&OrderLine{OrderID: o.ID, LineNo: 2}).First(&l2))
	if l2.Qty != 9 {
		t.Fatalf("line 2 qty %d, want 9", l2.Qty)
	}
	l3 := OrderLine{OrderID: o.ID, LineNo: 3, SKU: "P-3b", Qty: 4, PriceCents: 777}
	ok(t, db.Save(&l3))
	var l3got OrderLine
	ok(t, db.First(&l3got, "order_id = ? AND line_no = ?", o.ID, 3))
	if l3got.SKU != "P-3b" || l3got.PriceCents != 777 {
		t.Fatalf("Save by composite key read back %+v", l3got)
	}
	res = ok(t, db.Delete(&OrderLine{OrderID: o.ID, LineNo: 1}))
	if res.RowsAffected != 1 || len(readLines(t, db, o.ID)) != 2 {
		t.Fatalf("delete by composite key: %d rows, lines %+v", res.RowsAffected, readLines(t, db, o.ID))
	}
	tr.add("lines changed", readLines(t, db, o.ID))

	// An update from a subquery.
	ok(t, db.Model(&o).Update("total_cents", db.Model(&OrderLine{}).Select("sum(qty * price_cents)").Where("order_id = ?", o.ID)))
	ok(t, db.First(&got, "id = ?", o.ID))
	if got.TotalCents != 9*200+4*777 {
		t.Fatalf("total from subquery %d", got.TotalCents)
	}
	tr.add("total", got.TotalCents)

	// Batch insert: each row gets its own UUID.
	batch := []Order{{UserID: u.ID, Number: 8, Status: "paid"}, {UserID: u.ID, Number: 9}}
	ok(t, db.Create(&batch))
	if !uuidRE.MatchString(batch[0].ID) || !uuidRE.MatchString(batch[1].ID) || batch[0].ID == batch[1].ID {
		t.Fatalf("batch UUIDs %q %q", batch[0].ID, batch[1].ID)
	}
	var nums []int
	ok(t, db.Model(&Order{}).Where("id IN ?", []string{batch[0].ID, batch[1].ID}).Order("number").Pluck("number", &nums))
	if fmt.Sprint(nums) != "[8 9]" {
		t.Fatalf("batch orders read back by UUID: %v", nums)
	}

	// UPDATE ... RETURNING and DELETE ... RETURNING fill the models.
	var returned []Order
	res = ok(t, db.Model(&returned).Clauses(clause.Returning{}).Where("number IN ?", []int{8, 9}).Update("status", "shipped"))
	if res.RowsAffected != 2 || len(returned) != 2 || returned[0].Status != "shipped" || !uuidRE.MatchString(returned[0].ID) {
		t.Fatalf("UPDATE ... RETURNING: %d rows, %+v", res.RowsAffected, returned)
	}
	var shipped int64
	ok(t, db.Model(&Order{}).Where("status = ?", "shipped").Count(&shipped))
	if shipped != 2 {
		t.Fatalf("%d orders shipped after UPDATE ... RETURNING", shipped)
	}
	var deleted []Order
	res = ok(t, db.Clauses(clause.Returning{}).Where("number = ?", 9).Delete(&deleted))
	if res.RowsAffected != 1 || len(deleted) != 1 || deleted[0].ID != batch[1].ID || deleted[0].Status != "shipped" {
		t.Fatalf("DELETE ... RETURNING: %d rows, %+v", res.RowsAffected, deleted)
	}
	if n := countRows(t, db, "orders", "number = ?", 9); n != 0 {
		t.Fatal("order deleted with RETURNING still there")
	}

	// Deleting the order cascades to its lines.
	ok(t, db.Delete(&o))
	if n := countRows(t, db, "order_lines", "order_id = ?", o.ID); n != 0 {
		t.Fatalf("%d lines left after deleting their order", n)
	}
	var statuses []string
	ok(t, db.Model(&Order{}).Order("number").Pluck("status", &statuses))
	tr.add("orders left", statuses)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// scenarioJSONB: a Scan/Value type and raw JSON bytes in jsonb columns,
// written, queried with JSON operators and changed with jsonb_set.
func scenarioJSONB(t *testing.T, db *gorm.DB, tr *transcript) {
	u := User{Name: "Jo", Email: "jo@example.com"}
	ok(t, db.Create(&u))
	settings := Settings{
		Theme: "dark", Notifications: true, Langs: []string{"go", "sql"},
		Labels: map[string]string{"tier": "gold", "emoji": "🚀", "quote": `it's "quoted" \ ok`},
	}
	extra := json.RawMessage(`{"a": [1, 2, {"b": null}], "n": 1.5, "s": "x"}`)
	p := Profile{UserID: u.ID, Bio: "json", Settings: settings, Extra: extra}
	ok(t, db.Create(&p))

	var got Profile
	ok(t, db.First(&got, p.ID))
	if !reflect.DeepEqual(got.Settings, settings) {
		t.Fatalf("settings read back as %+v, want %+v", got.Settings, settings)
	}
	if !jsonEqual(got.Extra, extra) {
		t.Fatalf("extra read back as %s, want %s", got.Extra, extra)
	}
	tr.add("created", got.Settings)

	for _, q := range []struct {
		where string
		arg   any
	}{
		{"settings->>'theme' = ?", "dark"},
		{"settings @> ?", `{"langs": ["go"]}`},
		{"settings->'labels'->>'emoji' = ?", "🚀"},
		{"(extra->'a'->>1)::int = ?", 2},
		{"extra ? 'n'", nil},
	} {
		var n int64
		tx := db.Model(&Profile{})
		if q.arg != nil {
			tx = tx.Where(q.where, q.arg)
		} else {
			tx = tx.Where(q.where)
		}
		ok(t, tx.Count(&n))
		if n != 1 {
			t.Fatalf("jsonb query %q matched %d rows, want 1", q.where, n)
		}
	}

	ok(t, db.Model(&p).Update("settings", Settings{Theme: "light", Limits: map[string]int{"orders": 3}}))
	ok(t, db.First(&got, p.ID))
	if got.Settings.Theme != "light" || got.Settings.Limits["orders"] != 3 || got.Settings.Langs != nil {
		t.Fatalf("settings after update: %+v", got.Settings)
	}
	tr.add("updated", got.Settings)

	ok(t, db.Exec(`UPDATE profiles SET settings = jsonb_set(settings, '{limits,max}', ?::jsonb) WHERE id = ?`, "7", p.ID))
	ok(t, db.First(&got, p.ID))
	if got.Settings.Limits["max"] != 7 || got.Settings.Limits["orders"] != 3 {
		t.Fatalf("settings after jsonb_set: %+v", got.Settings)
	}
	tr.add("jsonb_set", got.Settings)

	ok(t, db.Model(&p).Update("extra", json.RawMessage(`[true, "two", 3]`)))
	ok(t, db.First(&got, p.ID))
	if !jsonEqual(got.Extra, []byte(`[true,"two",3]`)) {
		t.Fatalf("extra after update: %s", got.Extra)
	}
	ok(t, db.Model(&p).Update("extra", gorm.Expr("NULL")))
	ok(t, db.First(&got, p.ID))
	if got.Extra != nil {
		t.Fatalf("extra after setting NULL: %q", got.Extra)
	}

	var label string
	ok(t, db.Raw(`SELECT settings->>'theme' FROM profiles WHERE id = ?`, p.ID).Scan(&label))
	if label != "light" {
		t.Fatalf("raw jsonb read: %q", label)
	}
	tr.add("extra", string(got.Extra))
}

// scenarioTimes: timestamptz and date columns round trip to the same
// instant, whatever the zone they were written in; NULL times; times as
// arguments of forwarded writes.
func scenarioTimes(t *testing.T, db *gorm.DB, tr *transcript) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	login := time.Date(2024, 2, 29, 23, 59, 59, 123456000, zone) // microsecond precision
	birth := time.Date(1990, 7, 14, 0, 0, 0, 0, time.UTC)
	u := User{Name: "Tim", Email: "tim@example.com", BirthDate: &birth, LastLoginAt: &login}
	ok(t, db.Create(&u))

	got := readUser(t, db, u.ID)
	if got.LastLoginAt == nil || !got.LastLoginAt.Equal(login) {
		t.Fatalf("timestamptz round trip: wrote %v, read %v", login, got.LastLoginAt)
	}
	if got.BirthDate == nil || got.BirthDate.Format(time.DateOnly) != "1990-07-14" {
		t.Fatalf("date round trip: %v", got.BirthDate)
	}
	// GORM sets created_at in Go with nanoseconds; PostgreSQL keeps
	// microseconds.
	if d := got.CreatedAt.Sub(u.CreatedAt); d < -time.Microsecond || d > time.Microsecond {
		t.Fatalf("created_at: struct %v, stored %v", u.CreatedAt, got.CreatedAt)
	}
	tr.add("created", []string{ts(got.LastLoginAt), got.BirthDate.Format(time.DateOnly)})

	// Sub-microsecond input: whatever PostgreSQL keeps must be the same
	// through the plugin as without it (compared in the transcript).
	fine := time.Date(2030, 12, 31, 23, 59, 59, 999999600, zone)
	ok(t, db.Model(&User{ID: u.ID}).Update("last_login_at", fine))
	got = readUser(t, db, u.ID)
	if d := got.LastLoginAt.Sub(fine); d < -time.Microsecond || d > time.Microsecond {
		t.Fatalf("sub-microsecond time: wrote %v, read %v", fine, got.LastLoginAt)
	}
	tr.add("sub-microsecond", ts(got.LastLoginAt))

	// A time argument in a forwarded WHERE, and in a local one.
	res := ok(t, db.Model(&User{}).Where("last_login_at > ?", login).Update("age", 5))
	if res.RowsAffected != 1 {
		t.Fatalf("update where last_login_at > t affected %d rows", res.RowsAffected)
	}
	var n int64
	ok(t, db.Model(&User{}).Where("last_login_at = ? AND age = 5", got.LastLoginAt).Count(&n))
	if n != 1 {
		t.Fatalf("lookup by the time read back found %d rows", n)
	}

	// NULL and back.
	ok(t, db.Model(&User{ID: u.ID}).Updates(map[string]any{"last_login_at": nil, "birth_date": nil}))
	got = readUser(t, db, u.ID)
	if got.LastLoginAt != nil || got.BirthDate != nil {
		t.Fatalf("times after setting NULL: %v %v", got.LastLoginAt, got.BirthDate)
	}
	utc := login.UTC()
	ok(t, db.Model(&User{ID: u.ID}).Update("last_login_at", utc))
	got = readUser(t, db, u.ID)
	if !got.LastLoginAt.Equal(login) {
		t.Fatalf("UTC time round trip: %v vs %v", got.LastLoginAt, login)
	}
	// updated_at moved forward with each Update.
	if !got.UpdatedAt.After(got.CreatedAt) {
		t.Fatalf("updated_at %v not after created_at %v", got.UpdatedAt, got.CreatedAt)
	}
	// A time computed by the server, returned by a forwarded write.
	var stamped time.Time
	ok(t, db.Raw(`UPDATE users SET last_login_at = TIMESTAMPTZ '2001-02-03 04:05:06.789012+00' WHERE id = ? RETURNING last_login_at`, u.ID).Scan(&stamped))
	want := time.Date(2001, 2, 3, 4, 5, 6, 789012000, time.UTC)
	if !stamped.Equal(want) {
		t.Fatalf("RETURNING timestamptz: %v, want %v", stamped, want)
	}
	got = readUser(t, db, u.ID)
	if !got.LastLoginAt.Equal(want) {
		t.Fatalf("RETURNING time read back as %v", got.LastLoginAt)
	}
	tr.add("returned", ts(&stamped))
}

type counterRow struct {
	Name  string
	Value int64
	Note  string
}

func readCounters(t *testing.T, db *gorm.DB) []counterRow {
	t.Helper()
	var cs []Counter
	ok(t, db.Order("name").Find(&cs))
	out := []counterRow{}
	for _, c := range cs {
		out = append(out, counterRow{c.Name, c.Value, c.Note})
	}
	return out
}

func wantCounters(t *testing.T, db *gorm.DB, want string) {
	t.Helper()
	if got := fmt.Sprint(readCounters(t, db)); got != want {
		t.Fatalf("counters read back as %s, want %s", got, want)
	}
}

// scenarioUpserts: clause.OnConflict with DoNothing, DoUpdates (expression
// and columns), UpdateAll, a batch upsert, and CreateInBatches including a
// batch that fails and rolls the whole call back.
func scenarioUpserts(t *testing.T, db *gorm.DB, tr *transcript) {
	name := []clause.Column{{Name: "name"}}
	ok(t, db.Create(&Counter{Name: "visits", Value: 1, Note: "first"}))
	wantCounters(t, db, "[{visits 1 first}]")

	res := ok(t, db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Counter{Name: "visits", Value: 100, Note: "ignored"}))
	if res.RowsAffected != 0 {
		t.Fatalf("DoNothing on conflict affected %d rows", res.RowsAffected)
	}
	wantCounters(t, db, "[{visits 1 first}]")

	res = ok(t, db.Clauses(clause.OnConflict{Columns: name, DoUpdates: clause.Assignments(map[string]any{
		"value": gorm.Expr("counters.value + excluded.value"),
	})}).Create(&Counter{Name: "visits", Value: 5}))
	if res.RowsAffected != 1 {
		t.Fatalf("DoUpdates affected %d rows", res.RowsAffected)
	}
	wantCounters(t, db, "[{visits 6 first}]")

	ok(t, db.Clauses(clause.OnConflict{Columns: name, DoUpdates: clause.AssignmentColumns([]string{"note"})}).
		Create(&Counter{Name: "visits", Value: 999, Note: "noted"}))
	wantCounters(t, db, "[{visits 6 noted}]")

	ok(t, db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&Counter{Name: "visits", Value: 42, Note: "all"}))
	wantCounters(t, db, "[{visits 42 all}]")

	res = ok(t, db.Clauses(clause.OnConflict{Columns: name, DoUpdates: clause.Assignments(map[string]any{
		"value": gorm.Expr("counters.value + 1"),
	})}).Create(&[]Counter{{Name: "visits"}, {Name: "clicks", Value: 7}}))
	if res.RowsAffected != 2 {
		t.Fatalf("batch upsert affected %d rows", res.RowsAffected)
	}
	wantCounters(t, db, "[{clicks 7 } {visits 43 all}]")

	// Save of a slice upserts every element.
	res = ok(t, db.Save(&[]Counter{{Name: "clicks", Value: 70, Note: "saved"}, {Name: "views", Value: 1}}))
	if res.RowsAffected != 2 {
		t.Fatalf("Save of a slice affected %d rows", res.RowsAffected)
	}
	wantCounters(t, db, "[{clicks 70 saved} {views 1 } {visits 43 all}]")
	tr.add("counters", readCounters(t, db))

	ws := make([]Widget, 10)
	for i := range ws {
		ws[i] = Widget{Name: fmt.Sprintf("w-%02d", i), Count: i}
	}
	res = ok(t, db.CreateInBatches(&ws, 3))
	if res.RowsAffected != 10 {
		t.Fatalf("CreateInBatches affected %d rows", res.RowsAffected)
	}
	var ids []uint
	for i, w := range ws {
		if w.ID == 0 || (i > 0 && w.ID <= ws[i-1].ID) {
			t.Fatalf("CreateInBatches IDs not filled in order: %+v", ws)
		}
		ids = append(ids, w.ID)
	}
	var names []string
	ok(t, db.Model(&Widget{}).Order("id").Pluck("name", &names))
	if len(names) != 10 || names[9] != "w-09" {
		t.Fatalf("widgets read back: %v", names)
	}
	tr.add("batches", ids)

	// The last batch conflicts: CreateInBatches runs in one transaction,
	// so the earlier batches roll back too.
	bad := []Widget{{Name: "new-1"}, {Name: "new-2"}, {Name: "new-3"}, {Name: "w-00"}}
	err := db.CreateInBatches(&bad, 2).Error
	if !errors.Is(err, gorm.ErrDuplicatedKey) {
		t.Fatalf("CreateInBatches with a duplicate: %v, want ErrDuplicatedKey", err)
	}
	if n := countRows(t, db, "widgets", "name LIKE ?", "new-%"); n != 0 {
		t.Fatalf("%d rows of a failed CreateInBatches are visible", n)
	}
	tr.add("failed batch", countRows(t, db, "widgets", ""))
}

// scenarioColumnTypes: bytea (binary, with zero bytes, small and large),
// float, nullable integer, bool and numeric columns through forwarded
// writes and local reads.
func scenarioColumnTypes(t *testing.T, db *gorm.DB, tr *transcript) {
	u := User{Name: "Ty", Email: "ty@example.com"}
	ok(t, db.Create(&u))
	score := int64(-42)
	p := Profile{UserID: u.ID, Avatar: []byte{0, 1, 2, 0xff, 0xfe, '\\', '\'', 0}, Rating: 3.14159,
		Score: &score, Verified: true, Balance: "12345.67"}
	ok(t, db.Create(&p))
	var got Profile
	ok(t, db.First(&got, p.ID))
	if !bytes.Equal(got.Avatar, p.Avatar) || got.Rating != 3.14159 || got.Score == nil || *got.Score != -42 ||
		!got.Verified || got.Balance != "12345.67" {
		t.Fatalf("profile read back as %+v, wrote %+v", got, p)
	}
	tr.add("created", []any{got.Avatar, got.Rating, *got.Score, got.Verified, got.Balance})

	big := make([]byte, 256<<10)
	x := uint32(1)
	for i := range big {
		x = x*1664525 + 1013904223
		big[i] = byte(x >> 24)
	}
	ok(t, db.Model(&p).Updates(map[string]any{
		"avatar": big, "rating": -0.5, "score": nil, "verified": false,
		"balance": gorm.Expr("balance + ?", "0.33"),
	}))
	ok(t, db.First(&got, p.ID))
	if !bytes.Equal(got.Avatar, big) || got.Rating != -0.5 || got.Score != nil || got.Verified || got.Balance != "12346.00" {
		t.Fatalf("profile after update: rating %v score %v verified %v balance %s, avatar equal %v",
			got.Rating, got.Score, got.Verified, got.Balance, bytes.Equal(got.Avatar, big))
	}
	var sum [8]byte
	for i, b := range got.Avatar {
		sum[i%8] ^= b
	}
	tr.add("updated", []any{sum, got.Rating, got.Score, got.Verified, got.Balance})

	// Binary data as a query argument, in a forwarded write and a local read.
	res := ok(t, db.Model(&Profile{}).Where("avatar = ?", big).Update("bio", "big avatar"))
	if res.RowsAffected != 1 {
		t.Fatalf("update where avatar = <256KiB> affected %d rows", res.RowsAffected)
	}
	var n int64
	ok(t, db.Model(&Profile{}).Where("avatar = ? AND bio = ?", big, "big avatar").Count(&n))
	if n != 1 {
		t.Fatal("lookup by binary argument after the update found nothing")
	}

	// A bulk insert of many rows in one statement returns every ID.
	ws := make([]Widget, 2000)
	for i := range ws {
		ws[i] = Widget{Name: fmt.Sprintf("bulk-%04d", i), Count: i}
	}
	res = ok(t, db.Create(&ws))
	if res.RowsAffected != 2000 || ws[0].ID == 0 || ws[1999].ID != ws[0].ID+1999 {
		t.Fatalf("bulk insert: %d rows, ids %d..%d", res.RowsAffected, ws[0].ID, ws[1999].ID)
	}
	var total int64
	ok(t, db.Model(&Widget{}).Select("coalesce(sum(count), 0)").Scan(&total))
	if total != 1999*2000/2 {
		t.Fatalf("bulk rows read back with sum %d", total)
	}
	tr.add("bulk", []any{res.RowsAffected, total})
}
