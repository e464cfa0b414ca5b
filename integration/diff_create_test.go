package integration

import (
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// t0 is a fixed instant with microseconds, for columns the cases set.
var t0 = time.Date(2024, 3, 9, 14, 30, 15, 123456000, time.UTC)

// user creates a user named name through the case's handle and records the
// outcome.
func (c *dc) user(name string, opts ...func(*User)) User {
	c.t.Helper()
	u := User{Name: name, Email: name + "@example.com", Age: 30}
	for _, o := range opts {
		o(&u)
	}
	c.res("create user "+name, c.db.Create(&u))
	return u
}

// widgets creates widgets with the given names (count 1, 2, ...).
func (c *dc) widgets(names ...string) []Widget {
	c.t.Helper()
	ws := make([]Widget, len(names))
	for i, n := range names {
		ws[i] = Widget{Name: n, Count: i + 1}
	}
	c.res("create widgets", c.db.Create(&ws))
	return ws
}

func (c *dc) allWidgets() { c.all("widgets", &[]Widget{}) }

func (c *dc) allUsers() {
	c.all("users", &[]User{})
	c.all("companies", &[]Company{})
	c.all("profiles", &[]Profile{})
	c.all("orders", &[]Order{}, "number")
	c.all("tags", &[]Tag{})
	var joins []map[string]any
	c.res("user_tags", c.db.Raw("SELECT user_id, tag_id FROM user_tags ORDER BY 1, 2").Scan(&joins))
	c.rec("user_tags", joins)
}

var createCases = []dcase{
	{name: "single", run: func(c *dc) {
		w := Widget{Name: "a", Count: 1}
		c.res("create", c.db.Create(&w))
		c.rec("widget", w)
		c.allWidgets()
	}},
	{name: "slice", run: func(c *dc) {
		ws := []Widget{{Name: "a"}, {Name: "b", Count: 2}, {Name: "c"}}
		c.res("create", c.db.Create(&ws))
		c.rec("widgets", ws)
		c.allWidgets()
	}},
	{name: "pointer slice", run: func(c *dc) {
		ws := []*Widget{{Name: "a"}, {Name: "b"}}
		c.res("create", c.db.Create(ws))
		c.rec("widgets", ws)
		c.allWidgets()
	}},
	{name: "array", run: func(c *dc) {
		ws := [2]Widget{{Name: "a"}, {Name: "b"}}
		c.res("create", c.db.Create(&ws))
		c.rec("widgets", ws)
		c.allWidgets()
	}},
	{name: "map with model", run: func(c *dc) {
		m := map[string]any{"name": "m", "count": 3}
		c.res("create", c.db.Model(&Widget{}).Create(m))
		c.rec("map", m)
		c.allWidgets()
	}},
	{name: "slice of maps", run: func(c *dc) {
		ms := []map[string]any{{"name": "m1"}, {"name": "m2", "count": 2}}
		c.res("create", c.db.Model(&Widget{}).Create(&ms))
		c.rec("maps", ms)
		c.allWidgets()
	}},
	{name: "table and map", run: func(c *dc) {
		c.res("create", c.db.Table("widgets").Create(map[string]any{"name": "t", "count": 2}))
		c.allWidgets()
	}},
	{name: "in batches", run: func(c *dc) {
		ws := make([]Widget, 7)
		for i := range ws {
			ws[i] = Widget{Name: string(rune('a' + i)), Count: i}
		}
		c.res("create", c.db.CreateInBatches(&ws, 3))
		c.rec("widgets", ws)
		c.allWidgets()
	}},
	{name: "in batches with a failing batch", run: func(c *dc) {
		ws := []Widget{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "a"}}
		c.res("create", c.db.CreateInBatches(&ws, 2))
		c.allWidgets()
	}},
	{name: "select fields", run: func(c *dc) {
		w := Widget{Name: "s", Count: 9}
		c.res("create", c.db.Select("Name").Create(&w))
		c.rec("widget", w)
		c.allWidgets()
	}},
	{name: "omit fields", run: func(c *dc) {
		w := Widget{Name: "o", Count: 9}
		c.res("create", c.db.Omit("Count").Create(&w))
		c.allWidgets()
	}},
	{name: "database defaults", run: func(c *dc) {
		u := c.user("ann")
		o := Order{UserID: u.ID, Number: 1}
		c.res("create", c.db.Create(&o))
		c.rec("order", map[string]any{"status": o.Status, "id": o.ID, "placed": !o.PlacedAt.IsZero()})
		c.all("orders", &[]Order{}, "number")
	}},
	{name: "explicit values over defaults", run: func(c *dc) {
		u := c.user("ann")
		o := Order{UserID: u.ID, Number: 1, Status: "paid", PlacedAt: t0}
		c.res("create", c.db.Create(&o))
		c.rec("order", o)
		c.all("orders", &[]Order{}, "number")
	}},
	{name: "returning everything", run: func(c *dc) {
		w := Widget{Name: "r", Count: 4}
		c.res("create", c.db.Clauses(clause.Returning{}).Create(&w))
		c.rec("widget", w)
	}},
	{name: "returning some columns", run: func(c *dc) {
		ws := []Widget{{Name: "r1"}, {Name: "r2"}}
		c.res("create", c.db.Clauses(clause.Returning{Columns: []clause.Column{{Name: "id"}, {Name: "name"}}}).Create(&ws))
		c.rec("widgets", ws)
	}},
	{name: "duplicate key", run: func(c *dc) {
		c.widgets("a")
		w := Widget{Name: "a"}
		c.res("duplicate", c.db.Create(&w))
		c.rec("id after failure", w.ID)
		c.allWidgets()
	}},
	{name: "duplicate inside a slice", run: func(c *dc) {
		ws := []Widget{{Name: "a"}, {Name: "b"}, {Name: "a"}}
		c.res("create", c.db.Create(&ws))
		c.allWidgets()
	}},
	{name: "foreign key violated", run: func(c *dc) {
		c.res("create", c.db.Create(&Order{UserID: 999, Number: 1}))
		c.all("orders", &[]Order{}, "number")
	}},
	{name: "check constraint violated", run: func(c *dc) {
		c.res("create", c.db.Create(&Account{Owner: "x", Balance: -1}))
		c.all("accounts", &[]Account{})
	}},
	{name: "not null violated", run: func(c *dc) {
		c.res("create", c.db.Model(&Widget{}).Create(map[string]any{"count": 1}))
		c.allWidgets()
	}},
	{name: "explicit primary key", run: func(c *dc) {
		c.res("create 100", c.db.Create(&Widget{ID: 100, Name: "p"}))
		w := Widget{Name: "q"}
		c.res("create next", c.db.Create(&w))
		c.rec("next id", w.ID)
		c.allWidgets()
	}},
	{name: "explicit primary key taken", run: func(c *dc) {
		c.widgets("a")
		c.res("create id 1", c.db.Create(&Widget{ID: 1, Name: "b"}))
		c.allWidgets()
	}},
	{name: "belongs to", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Company = &Company{Name: "acme"} })
		c.rec("company id", u.CompanyID)
		c.allUsers()
	}},
	{name: "has one", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Profile = &Profile{Bio: "b", Balance: "1.50", Settings: Settings{Theme: "dark"}} })
		c.rec("profile", u.Profile)
		c.allUsers()
	}},
	{name: "has many", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Orders = []Order{{Number: 1}, {Number: 2, Status: "paid"}} })
		c.rec("orders", len(u.Orders))
		c.allUsers()
	}},
	{name: "many to many", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Tags = []Tag{{Name: "x"}, {Name: "y"}} })
		c.allUsers()
	}},
	{name: "many to many with an existing tag", run: func(c *dc) {
		x := Tag{Name: "x"}
		c.res("tag", c.db.Create(&x))
		c.user("ann", func(u *User) { u.Tags = []Tag{x, {Name: "y"}} })
		c.user("bob", func(u *User) { u.Tags = []Tag{x} })
		c.allUsers()
	}},
	{name: "nested has many", run: func(c *dc) {
		u := c.user("ann")
		o := Order{UserID: u.ID, Number: 7, Lines: []OrderLine{{LineNo: 1, SKU: "a", Qty: 1, PriceCents: 100}, {LineNo: 2, SKU: "b", Qty: 2, PriceCents: 250}}}
		c.res("order", c.db.Create(&o))
		c.all("lines", &[]OrderLine{}, "line_no")
	}},
	{name: "every association", run: func(c *dc) {
		c.user("ann", func(u *User) {
			u.Company = &Company{Name: "acme"}
			u.Profile = &Profile{Bio: "hi"}
			u.Orders = []Order{{Number: 1}}
			u.Tags = []Tag{{Name: "t"}}
		})
		c.allUsers()
	}},
	{name: "omit associations", run: func(c *dc) {
		u := User{Name: "ann", Email: "ann@example.com", Company: &Company{Name: "acme"}, Tags: []Tag{{Name: "t"}}}
		c.res("create", c.db.Omit(clause.Associations).Create(&u))
		c.allUsers()
	}},
	{name: "select an association", run: func(c *dc) {
		u := User{Name: "ann", Email: "ann@example.com", Company: &Company{Name: "acme"}, Tags: []Tag{{Name: "t"}}}
		c.res("create", c.db.Select("Name", "Email", "Tags").Create(&u))
		c.allUsers()
	}},
	{name: "failing association rolls back", run: func(c *dc) {
		c.res("tag", c.db.Create(&Tag{Name: "t"}))
		c.user("ann", func(u *User) { u.Profile = &Profile{Bio: "b"}; u.Company = &Company{Name: "acme"} })
		// The same company name: the belongs-to insert conflicts.
		u := User{Name: "bob", Email: "bob@example.com", Company: &Company{Name: "acme"}, Profile: &Profile{UserID: 1}}
		c.res("create", c.db.Create(&u))
		c.allUsers()
	}},
	{name: "unscannable returning default", run: func(c *dc) {
		c.res("create", c.db.Create(&Unscannable{}))
		var n int64
		c.res("count", c.db.Model(&Unscannable{}).Count(&n))
		c.rec("rows", n)
	}},
	{name: "empty slice", run: func(c *dc) {
		c.res("create", c.db.Create(&[]Widget{}))
	}},
	{name: "nil value", run: func(c *dc) {
		var w *Widget
		c.res("create", c.db.Create(w))
	}},
	{name: "composite primary key", run: func(c *dc) {
		u := c.user("ann")
		o := Order{UserID: u.ID, Number: 1}
		c.res("order", c.db.Create(&o))
		lines := []OrderLine{{OrderID: o.ID, LineNo: 1, SKU: "a", Qty: 1, PriceCents: 1}, {OrderID: o.ID, LineNo: 2, SKU: "b", Qty: 1, PriceCents: 2}}
		c.res("lines", c.db.Create(&lines))
		c.res("duplicate line", c.db.Create(&OrderLine{OrderID: o.ID, LineNo: 1, SKU: "c", Qty: 1, PriceCents: 3}))
		c.all("lines", &[]OrderLine{}, "line_no")
	}},
	{name: "uuid key supplied", run: func(c *dc) {
		u := c.user("ann")
		o := Order{ID: "6f1c8f0e-2d3b-4c5a-9e7f-0a1b2c3d4e5f", UserID: u.ID, Number: 1}
		c.res("create", c.db.Create(&o))
		var got Order
		c.res("first", c.db.First(&got, "id = ?", o.ID))
		c.rec("order", got)
	}},
	{name: "times and dates", run: func(c *dc) {
		birth := time.Date(1990, 5, 17, 0, 0, 0, 0, time.UTC)
		login := t0.In(time.FixedZone("X", 5*3600+1800))
		u := c.user("ann", func(u *User) { u.BirthDate, u.LastLoginAt = &birth, &login })
		var got User
		c.res("first", c.db.First(&got, u.ID))
		c.rec("times", []any{ts(got.BirthDate), ts(got.LastLoginAt)})
	}},
	{name: "skip hooks", run: func(c *dc) {
		d := Document{Title: "quiet"}
		c.res("create", c.db.Session(&gorm.Session{SkipHooks: true}).Create(&d))
		c.rec("ran", d.Ran)
		c.all("audits", &[]AuditEntry{})
	}},
	{name: "create then read back at once", run: func(c *dc) {
		for i := 0; i < 5; i++ {
			w := Widget{Name: string(rune('a' + i)), Count: i}
			c.res("create", c.db.Create(&w))
			var got Widget
			c.res("read", c.db.First(&got, w.ID))
			c.rec("read", got)
		}
	}},
}

var upsertCases = []dcase{
	{name: "do nothing without conflict", run: func(c *dc) {
		n := Counter{Name: "a", Value: 1}
		c.res("upsert", c.db.Clauses(clause.OnConflict{DoNothing: true}).Create(&n))
		c.all("counters", &[]Counter{})
	}},
	{name: "do nothing on conflict", run: func(c *dc) {
		c.res("first", c.db.Create(&Counter{Name: "a", Value: 1}))
		c.res("upsert", c.db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Counter{Name: "a", Value: 2}))
		c.all("counters", &[]Counter{})
	}},
	{name: "do nothing in a slice", run: func(c *dc) {
		c.widgets("a")
		ws := []Widget{{Name: "a", Count: 5}, {Name: "b", Count: 6}}
		c.res("upsert", c.db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "name"}}, DoNothing: true}).Create(&ws))
		c.rec("widgets", ws)
		c.allWidgets()
	}},
	{name: "update all", run: func(c *dc) {
		c.res("first", c.db.Create(&Counter{Name: "a", Value: 1, Note: "old"}))
		n := Counter{Name: "a", Value: 5, Note: "new"}
		c.res("upsert", c.db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&n))
		c.all("counters", &[]Counter{})
	}},
	{name: "assignment columns", run: func(c *dc) {
		c.res("first", c.db.Create(&Counter{Name: "a", Value: 1, Note: "keep"}))
		c.res("upsert", c.db.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "name"}},
			DoUpdates: clause.AssignmentColumns([]string{"value"}),
		}).Create(&Counter{Name: "a", Value: 7, Note: "ignored"}))
		c.all("counters", &[]Counter{})
	}},
	{name: "assignments with an expression", run: func(c *dc) {
		for i := 1; i <= 3; i++ {
			c.res("upsert", c.db.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "name"}},
				DoUpdates: clause.Assignments(map[string]any{"value": gorm.Expr("counters.value + excluded.value")}),
			}).Create(&Counter{Name: "hits", Value: int64(i)}))
		}
		c.all("counters", &[]Counter{})
	}},
	{name: "conditional update", run: func(c *dc) {
		up := func(v int64) *gorm.DB {
			return c.db.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "name"}},
				Where:     clause.Where{Exprs: []clause.Expression{gorm.Expr("counters.value < excluded.value")}},
				DoUpdates: clause.AssignmentColumns([]string{"value"}),
			}).Create(&Counter{Name: "max", Value: v})
		}
		for _, v := range []int64{5, 3, 9, 1} {
			c.res("upsert", up(v))
		}
		c.all("counters", &[]Counter{})
	}},
	{name: "on constraint", run: func(c *dc) {
		c.res("first", c.db.Create(&Counter{Name: "a", Value: 1}))
		c.res("upsert", c.db.Clauses(clause.OnConflict{OnConstraint: "counters_pkey", DoUpdates: clause.AssignmentColumns([]string{"note"})}).Create(&Counter{Name: "a", Note: "via constraint"}))
		c.all("counters", &[]Counter{})
	}},
	{name: "batch upsert", run: func(c *dc) {
		c.res("first", c.db.Create(&[]Counter{{Name: "a", Value: 1}, {Name: "b", Value: 2}}))
		c.res("upsert", c.db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&[]Counter{{Name: "b", Value: 20}, {Name: "c", Value: 30}}))
		c.all("counters", &[]Counter{})
	}},
	{name: "upsert returning", run: func(c *dc) {
		c.widgets("a")
		w := Widget{Name: "a", Count: 42}
		c.res("upsert", c.db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "name"}}, UpdateAll: true}, clause.Returning{}).Create(&w))
		c.rec("widget", w)
		c.allWidgets()
	}},
	{name: "upsert of a uuid model", run: func(c *dc) {
		u := c.user("ann")
		c.res("first", c.db.Create(&Order{UserID: u.ID, Number: 1}))
		o := Order{UserID: u.ID, Number: 1, Status: "shipped"}
		c.res("upsert", c.db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "number"}}, DoUpdates: clause.AssignmentColumns([]string{"status"})}).Create(&o))
		c.all("orders", &[]Order{}, "number")
	}},
	{name: "save inserts", run: func(c *dc) {
		w := Widget{Name: "s"}
		c.res("save", c.db.Save(&w))
		c.rec("widget", w)
		c.allWidgets()
	}},
	{name: "save updates", run: func(c *dc) {
		ws := c.widgets("a")
		ws[0].Count = 10
		c.res("save", c.db.Save(&ws[0]))
		c.allWidgets()
	}},
	{name: "save a missing row inserts it", run: func(c *dc) {
		c.res("save", c.db.Save(&Widget{ID: 50, Name: "ghost"}))
		c.allWidgets()
	}},
	{name: "save a slice", run: func(c *dc) {
		ws := c.widgets("a", "b")
		ws[1].Count = 9
		ws = append(ws, Widget{Name: "c"})
		c.res("save", c.db.Save(&ws))
		c.rec("widgets", ws)
		c.allWidgets()
	}},
	{name: "save with a conflict", run: func(c *dc) {
		c.widgets("a", "b")
		c.res("save", c.db.Save(&Widget{ID: 2, Name: "a"}))
		c.allWidgets()
	}},
	{name: "first or create creates", run: func(c *dc) {
		var w Widget
		c.res("foc", c.db.Where(Widget{Name: "f"}).Attrs(Widget{Count: 3}).FirstOrCreate(&w))
		c.rec("widget", w)
		c.allWidgets()
	}},
	{name: "first or create finds", run: func(c *dc) {
		c.widgets("f")
		var w Widget
		c.res("foc", c.db.Where(Widget{Name: "f"}).Attrs(Widget{Count: 3}).FirstOrCreate(&w))
		c.rec("widget", w)
		c.allWidgets()
	}},
	{name: "first or create assigns", run: func(c *dc) {
		c.widgets("f")
		var w, n Widget
		c.res("found", c.db.Where(Widget{Name: "f"}).Assign(Widget{Count: 9}).FirstOrCreate(&w))
		c.res("new", c.db.Where(Widget{Name: "g"}).Assign(Widget{Count: 8}).FirstOrCreate(&n))
		c.rec("widgets", []Widget{w, n})
		c.allWidgets()
	}},
	{name: "first or init", run: func(c *dc) {
		c.widgets("f")
		var found, fresh, assigned Widget
		c.res("found", c.db.Where(Widget{Name: "f"}).Attrs(Widget{Count: 7}).FirstOrInit(&found))
		c.res("fresh", c.db.Where(Widget{Name: "g"}).Attrs(Widget{Count: 7}).FirstOrInit(&fresh))
		c.res("assigned", c.db.Where(Widget{Name: "f"}).Assign(Widget{Count: 8}).FirstOrInit(&assigned))
		c.rec("widgets", []Widget{found, fresh, assigned})
		c.allWidgets()
	}},
	{name: "first or create with a conflict", run: func(c *dc) {
		c.res("company", c.db.Create(&Company{Name: "acme"}))
		var u User
		c.res("foc", c.db.Where(User{Email: "x@example.com"}).Attrs(User{Name: "x", Company: &Company{Name: "acme"}}).FirstOrCreate(&u))
		c.allUsers()
	}},
}
