package integration

import (
	"database/sql"
	"encoding/json"
	"math"
	"time"

	"gorm.io/gorm"
)

// typed is a Typed with every column set.
func typed(name string) Typed {
	day := time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)
	yes := true
	ref := "0b6f2c1e-9a4d-4e8b-8f3a-2c1d0e9f8a7b"
	blob := make([]byte, 256)
	for i := range blob {
		blob[i] = byte(i)
	}
	return Typed{
		Name:   name,
		Doc:    Settings{Theme: "dark", Notifications: true, Langs: []string{"en", "fr"}, Limits: map[string]int{"a": 1}},
		Raw:    json.RawMessage(`{"k": [1, 2.5, "x", null, true]}`),
		Labels: StringArray{"a", "b c", "d"},
		At:     t0.In(time.FixedZone("east", 9*3600)),
		Day:    &day,
		Wall:   time.Date(2023, 12, 31, 23, 59, 59, 999999000, time.UTC),
		Code:   "c0ffee00-1234-4abc-8def-0123456789ab",
		Ref:    &ref,
		Amount: "12345678901234.123456",
		Price:  Cents(-1999),
		Blob:   blob,
		Mood:   "happy",
		Big:    math.MaxInt64,
		Small:  math.MinInt16,
		Ratio:  1.0 / 3,
		Flag:   true,
		Maybe:  &yes,
		Note:   sql.NullString{String: "", Valid: true},
		Count:  sql.NullInt64{Int64: -7, Valid: true},
		Span:   "1 day 02:03:04.5",
		Addr:   "192.0.2.1",
	}
}

// readTyped reads back every typed row and records it with its times in UTC.
func (c *dc) readTyped() {
	c.t.Helper()
	var rows []Typed
	c.res("read typed", c.db.Order("id").Find(&rows))
	for i := range rows {
		rows[i].At = rows[i].At.UTC()
	}
	c.rec("typed", rows)
}

func (c *dc) createTyped(ty Typed) Typed {
	c.t.Helper()
	c.res("create typed "+ty.Name, c.db.Create(&ty))
	return ty
}

var typeCases = []dcase{
	{name: "every type round trip", run: func(c *dc) {
		ty := c.createTyped(typed("full"))
		c.rec("created", ty.ID)
		c.readTyped()
	}},
	{name: "NULLs and zero values", run: func(c *dc) {
		c.res("create", c.db.Create(&Typed{Name: "empty", Code: "00000000-0000-0000-0000-000000000000", Amount: "0", Mood: "ok", Span: "0", Addr: "::1"}))
		c.readTyped()
	}},
	{name: "update JSON through a Valuer", run: func(c *dc) {
		ty := c.createTyped(typed("j"))
		c.res("update", c.db.Model(&ty).Update("doc", Settings{Theme: "light", Labels: map[string]string{"x": "y"}}))
		c.readTyped()
	}},
	{name: "query JSON", run: func(c *dc) {
		c.createTyped(typed("a"))
		b := typed("b")
		b.Doc.Theme = "light"
		c.createTyped(b)
		var names []string
		c.res("->>", c.db.Model(&Typed{}).Where("doc->>'theme' = ?", "dark").Pluck("name", &names))
		c.res("@>", c.db.Model(&Typed{}).Where("doc @> ?", `{"theme": "light"}`).Pluck("name", &names))
		c.rec("names", names)
		var raw []json.RawMessage
		c.res("jsonb path", c.db.Model(&Typed{}).Order("id").Pluck("raw->'k'", &raw))
		c.rec("raw", raw)
	}},
	{name: "array functions", run: func(c *dc) {
		ty := c.createTyped(typed("arr"))
		c.res("append", c.db.Model(&ty).Update("labels", gorm.Expr("array_append(labels, ?)", "z")))
		var names []string
		c.res("any", c.db.Model(&Typed{}).Where("? = ANY(labels)", "z").Pluck("name", &names))
		c.rec("names", names)
		c.readTyped()
	}},
	{name: "times across zones", run: func(c *dc) {
		ty := typed("tz")
		ty.At = time.Date(2024, 10, 27, 1, 30, 0, 0, time.FixedZone("minus", -11*3600))
		c.createTyped(ty)
		var n int64
		c.res("range", c.db.Model(&Typed{}).Where("at BETWEEN ? AND ?", ty.At.Add(-time.Second), ty.At.Add(time.Second)).Count(&n))
		c.rec("in range", n)
		var days []string
		c.res("by day", c.db.Model(&Typed{}).Select("to_char(day, 'YYYY-MM-DD')").Scan(&days))
		c.rec("days", days)
		c.readTyped()
	}},
	{name: "numeric arithmetic", run: func(c *dc) {
		ty := c.createTyped(typed("num"))
		c.res("update", c.db.Model(&ty).Updates(map[string]any{"amount": gorm.Expr("amount * 3"), "price": gorm.Expr("price + 0.01")}))
		var sum string
		c.res("sum", c.db.Model(&Typed{}).Select("sum(amount)::text").Scan(&sum))
		c.rec("sum", sum)
		c.readTyped()
	}},
	{name: "enum", run: func(c *dc) {
		ty := c.createTyped(typed("mood"))
		c.res("valid", c.db.Model(&ty).Update("mood", "sad"))
		c.res("invalid", c.db.Model(&ty).Update("mood", "angry"))
		bad := typed("bad")
		bad.Mood = "furious"
		c.res("create invalid", c.db.Create(&bad))
		c.readTyped()
	}},
	{name: "bytea", run: func(c *dc) {
		ty := c.createTyped(typed("bin"))
		c.res("update", c.db.Model(&ty).Update("blob", []byte{0, 0xff, 0, '\\', '\''}))
		var b []byte
		c.res("pluck", c.db.Model(&Typed{}).Select("blob").Where("id = ?", ty.ID).Scan(&b))
		c.rec("blob", b)
	}},
	{name: "extreme numbers", run: func(c *dc) {
		ty := typed("big")
		ty.Big, ty.Small, ty.Ratio = math.MinInt64, math.MaxInt16, math.SmallestNonzeroFloat64
		c.createTyped(ty)
		c.res("overflow", c.db.Model(&Typed{}).Where("name = ?", "big").Update("small", 40000))
		c.readTyped()
	}},
	{name: "NULL pointers and Null types", run: func(c *dc) {
		ty := c.createTyped(typed("nulls"))
		c.res("nulls", c.db.Model(&ty).Updates(map[string]any{"maybe": nil, "note": nil, "count": nil, "ref": nil, "day": nil, "labels": nil}))
		c.readTyped()
	}},
	{name: "unicode text", run: func(c *dc) {
		c.res("create", c.db.Create(&Widget{Name: "héllo 世界 🎉 \u00a0"}))
		var names []string
		c.res("like", c.db.Model(&Widget{}).Where("name LIKE ?", "%世界%").Pluck("name", &names))
		c.rec("names", names)
	}},
	{name: "uuid columns", run: func(c *dc) {
		ty := c.createTyped(typed("u"))
		var got Typed
		c.res("by uuid", c.db.Where("code = ?", ty.Code).First(&got))
		c.res("bad uuid", c.db.Where("code = ?", "not-a-uuid").First(&got))
		c.rec("name", got.Name)
	}},
	{name: "interval and inet", run: func(c *dc) {
		ty := c.createTyped(typed("net"))
		var in []bool
		c.res("contained", c.db.Model(&Typed{}).Select("addr << '192.0.2.0/24'::inet").Scan(&in))
		c.res("interval", c.db.Model(&ty).Update("span", gorm.Expr("span * 2")))
		c.rec("contained", in)
		c.readTyped()
	}},
	{name: "scan into maps", run: func(c *dc) {
		c.createTyped(typed("m"))
		var ms []map[string]any
		c.res("maps", c.db.Model(&Typed{}).Select("name, at, day, amount, blob, mood, big, flag, maybe, span").Find(&ms))
		c.rec("maps", ms)
	}},
	{name: "pluck times", run: func(c *dc) {
		c.createTyped(typed("p"))
		var ats []time.Time
		c.res("pluck", c.db.Model(&Typed{}).Pluck("at", &ats))
		for i := range ats {
			ats[i] = ats[i].UTC()
		}
		c.rec("ats", ats)
	}},
}
