package integration

import (
	"context"
	"errors"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

var configCases = []dcase{
	{name: "prepared statements: writes and reads", variant: "prepare", run: func(c *dc) {
		ws := c.widgets("a", "b")
		c.res("update", c.db.Model(&ws[0]).Update("count", 10))
		c.res("delete", c.db.Delete(&ws[1]))
		for i := 0; i < 3; i++ {
			var w Widget
			c.res("first", c.db.First(&w, ws[0].ID))
			c.rec("first", w)
		}
		c.allWidgets()
	}},
	{name: "prepared statements: associations", variant: "prepare", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Tags = []Tag{{Name: "t"}}; u.Profile = &Profile{Bio: "b"} })
		c.allUsers()
	}},
	{name: "prepared statements: transaction", variant: "prepare", run: func(c *dc) {
		c.widgets("a")
		var w Widget
		c.res("first outside", c.db.Where("name = ?", "a").First(&w))
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			var again Widget
			if err := tx.Where("name = ?", "a").First(&again).Error; err != nil {
				return err
			}
			return tx.Model(&again).Update("count", again.Count+1).Error
		}))
		c.allWidgets()
	}},
	{name: "prepared statement session reused in a transaction", run: func(c *dc) {
		c.widgets("a")
		s := c.db.Session(&gorm.Session{PrepareStmt: true})
		var w Widget
		c.res("first outside", s.Where("name = ?", "a").First(&w))
		c.err("tx", s.Transaction(func(tx *gorm.DB) error {
			var again Widget
			if err := tx.Where("name = ?", "a").First(&again).Error; err != nil {
				return err
			}
			return tx.Model(&again).Update("count", 5).Error
		}))
		c.res("first after", s.Where("name = ?", "a").First(&w))
		c.rec("widget", w)
	}},
	{name: "prepared statement session writes", run: func(c *dc) {
		s := c.db.Session(&gorm.Session{PrepareStmt: true})
		for _, n := range []string{"a", "b", "a"} {
			c.res("create", s.Create(&Widget{Name: n}))
		}
		c.res("update", s.Model(&Widget{}).Where("name = ?", "b").Update("count", 3))
		c.allWidgets()
	}},
	{name: "no default transaction: writes", variant: "skiptx", run: func(c *dc) {
		ws := c.widgets("a", "b")
		c.res("update", c.db.Model(&ws[0]).Update("count", 9))
		c.res("duplicate", c.db.Create(&Widget{Name: "b"}))
		c.res("delete", c.db.Delete(&ws[1]))
		c.allWidgets()
	}},
	{name: "no default transaction: failing hook keeps the row", variant: "skiptx", run: func(c *dc) {
		d := Document{Title: "kept", FailIn: "AfterSave"}
		c.res("create", c.db.Create(&d))
		c.all("documents", &[]Document{})
		c.documentAudits()
	}},
	{name: "no default transaction: associations", variant: "skiptx", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Tags = []Tag{{Name: "t"}}; u.Company = &Company{Name: "c"} })
		c.allUsers()
	}},
	{name: "no default transaction: unscannable default", variant: "skiptx", run: func(c *dc) {
		c.res("create", c.db.Create(&Unscannable{}))
		var n int64
		c.res("count", c.db.Model(&Unscannable{}).Count(&n))
		c.rec("rows", n)
	}},
	{name: "no default transaction in a session", run: func(c *dc) {
		s := c.db.Session(&gorm.Session{SkipDefaultTransaction: true})
		c.res("create", s.Create(&Document{Title: "s", FailIn: "AfterCreate"}))
		c.res("create widget", s.Create(&Widget{Name: "w"}))
		c.all("documents", &[]Document{})
		c.allWidgets()
	}},
	{name: "dry run", run: func(c *dc) {
		stmt := c.db.Session(&gorm.Session{DryRun: true}).Create(&Widget{Name: "dry"}).Statement
		c.rec("sql", stmt.SQL.String())
		c.allWidgets()
	}},
	{name: "create batch size", run: func(c *dc) {
		ws := []Widget{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e"}}
		c.res("create", c.db.Session(&gorm.Session{CreateBatchSize: 2}).Create(&ws))
		c.rec("ids", ws)
	}},
	{name: "query fields", run: func(c *dc) {
		c.widgets("a")
		var w Widget
		c.res("first", c.db.Session(&gorm.Session{QueryFields: true}).First(&w))
		c.rec("widget", w)
	}},
	{name: "new session per statement", run: func(c *dc) {
		base := c.db.Session(&gorm.Session{NewDB: true}).Model(&Widget{})
		c.widgets("a", "b")
		c.res("update", base.Where("name = ?", "a").Update("count", 7))
		var n int64
		c.res("count", base.Count(&n))
		c.rec("count", n)
	}},
}

var miscCases = []dcase{
	{name: "connection block that reads", run: func(c *dc) {
		c.widgets("a", "b")
		c.err("connection", c.db.Connection(func(conn *gorm.DB) error {
			var ws []Widget
			if err := conn.Find(&ws).Error; err != nil {
				return err
			}
			c.rec("widgets", ws)
			var n int64
			return conn.Model(&Widget{}).Count(&n).Error
		}))
	}},
	{name: "connection block with SET and SHOW", run: func(c *dc) {
		c.err("connection", c.db.Connection(func(conn *gorm.DB) error {
			if err := conn.Exec("SET application_name = 'diff'").Error; err != nil {
				return err
			}
			var name string
			err := conn.Raw("SHOW application_name").Scan(&name).Error
			c.rec("name", name)
			return err
		}))
	}},
	{name: "connection block with a temporary table", run: func(c *dc) {
		c.err("connection", c.db.Connection(func(conn *gorm.DB) error {
			if err := conn.Exec("CREATE TEMP TABLE diff_tmp (id int)").Error; err != nil {
				return err
			}
			if err := conn.Exec("INSERT INTO diff_tmp VALUES (1)").Error; err != nil {
				return err
			}
			var n int64
			err := conn.Raw("SELECT count(*) FROM diff_tmp").Scan(&n).Error
			c.rec("n", n)
			return err
		}))
	}},
	{name: "connection block with a transaction", run: func(c *dc) {
		c.err("connection", c.db.Connection(func(conn *gorm.DB) error {
			return conn.Transaction(func(tx *gorm.DB) error { return createIn(tx, "a") })
		}))
		c.allWidgets()
	}},
	{name: "connection block with a session lock", run: func(c *dc) {
		c.err("connection", c.db.Connection(func(conn *gorm.DB) error {
			var got bool
			if err := conn.Raw("SELECT pg_try_advisory_lock(99)").Scan(&got).Error; err != nil {
				return err
			}
			c.rec("locked", got)
			return conn.Exec("SELECT pg_advisory_unlock(99)").Error
		}))
	}},
	{name: "column types in a transaction", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			cols, err := tx.Migrator().ColumnTypes(&Widget{})
			var names []string
			for _, col := range cols {
				names = append(names, col.Name()+" "+col.DatabaseTypeName())
			}
			c.rec("columns", names)
			return err
		}))
	}},
	{name: "auto migrate in a transaction", run: func(c *dc) {
		type DiffMigrated struct {
			ID   uint
			Name string
		}
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.AutoMigrate(&DiffMigrated{}); err != nil {
				return err
			}
			return tx.Create(&DiffMigrated{Name: "m"}).Error
		}))
		var names []string
		c.res("read", c.db.Model(&DiffMigrated{}).Pluck("name", &names))
		c.rec("names", names)
		c.err("drop", c.db.Migrator().DropTable(&DiffMigrated{}))
	}},
	{name: "migrator reads", run: func(c *dc) {
		m := c.db.Migrator()
		c.rec("has", []bool{m.HasTable(&Widget{}), m.HasTable("nope"), m.HasColumn(&Widget{}, "Count"), m.HasIndex(&Widget{}, "Name")})
		cols, err := m.ColumnTypes(&Widget{})
		c.err("column types", err)
		c.rec("columns", len(cols))
	}},
	{name: "migrator changes", run: func(c *dc) {
		m := c.db.Migrator()
		c.res("add column", c.db.Exec("ALTER TABLE widgets ADD COLUMN diff_extra text"))
		c.rec("has", m.HasColumn(&Widget{}, "diff_extra"))
		c.err("drop column", m.DropColumn(&Widget{}, "diff_extra"))
		c.rec("has after", m.HasColumn(&Widget{}, "diff_extra"))
		c.err("create index", m.CreateIndex(&Typed{}, "Name"))
		c.rec("index", m.HasIndex(&Typed{}, "Name"))
		c.err("drop index", m.DropIndex(&Typed{}, "Name"))
	}},
	{name: "cancelled context", run: func(c *dc) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c.res("create", c.db.WithContext(ctx).Create(&Widget{Name: "a"}))
		var ws []Widget
		c.res("find", c.db.WithContext(ctx).Find(&ws))
		c.allWidgets()
	}},
	{name: "deadline already passed", run: func(c *dc) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		c.res("create", c.db.WithContext(ctx).Create(&Widget{Name: "a"}))
		c.res("exec", c.db.WithContext(ctx).Exec("UPDATE widgets SET count = 1"))
		c.allWidgets()
	}},
	{name: "deadline during a statement", run: func(c *dc) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := c.db.WithContext(ctx).Exec("INSERT INTO widgets (name) SELECT 'slow' FROM pg_sleep(3)").Error
		// Which of the two reports a statement cut by its deadline
		// depends on who notices first, in either setting.
		c.rec("timed out", errors.Is(err, context.DeadlineExceeded) || sqlState(err) == "57014")
		c.allWidgets()
	}},
	{name: "reads: count, pluck, distinct, group, having", run: func(c *dc) {
		for i, n := range []string{"a", "b", "c", "d"} {
			c.res("create", c.db.Create(&Widget{Name: n, Count: i % 2}))
		}
		var n int64
		c.res("count", c.db.Model(&Widget{}).Where("count = ?", 1).Count(&n))
		var names []string
		c.res("pluck", c.db.Model(&Widget{}).Order("name DESC").Pluck("name", &names))
		var counts []int
		c.res("distinct", c.db.Model(&Widget{}).Distinct("count").Order("count").Pluck("count", &counts))
		var groups []struct {
			Count int
			N     int
		}
		c.res("group", c.db.Model(&Widget{}).Select("count, count(*) AS n").Group("count").Having("count(*) > ?", 1).Order("count").Scan(&groups))
		c.rec("reads", []any{n, names, counts, groups})
	}},
	{name: "first, take, last, not found", run: func(c *dc) {
		c.widgets("a", "b")
		var f, tk, l, none Widget
		c.res("first", c.db.First(&f))
		c.res("take", c.db.Where("name = ?", "b").Take(&tk))
		c.res("last", c.db.Last(&l))
		c.res("not found", c.db.First(&none, 99))
		var list []Widget
		c.res("find none", c.db.Where("id > ?", 99).Find(&list))
		c.rec("found", []Widget{f, tk, l, none})
	}},
	{name: "scopes and subqueries", run: func(c *dc) {
		c.widgets("a", "b", "c")
		big := func(db *gorm.DB) *gorm.DB { return db.Where("count > ?", 1) }
		var ws []Widget
		c.res("scopes", c.db.Scopes(big).Order("id").Find(&ws))
		var sub []Widget
		c.res("from subquery", c.db.Table("(?) AS w", c.db.Model(&Widget{}).Where("count < ?", 3)).Order("id").Find(&sub))
		c.rec("results", []any{ws, sub})
	}},
	{name: "find in batches with writes", run: func(c *dc) {
		for i := 0; i < 7; i++ {
			c.res("create", c.db.Create(&Event{Kind: "new", N: i}))
		}
		var batch []Event
		c.res("batches", c.db.Where("kind = ?", "new").FindInBatches(&batch, 3, func(tx *gorm.DB, n int) error {
			ids := make([]uint, len(batch))
			for i, e := range batch {
				ids[i] = e.ID
			}
			return c.db.Model(&Event{}).Where("id IN ?", ids).Update("kind", "seen").Error
		}))
		c.all("events", &[]Event{})
	}},
	{name: "preload with conditions", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Orders = []Order{{Number: 1, Status: "paid"}, {Number: 2}} })
		var users []User
		c.res("preload", c.db.Preload("Orders", "status = ?", "paid").Find(&users))
		c.rec("orders", len(users[0].Orders))
	}},
	{name: "write then read in a loop", run: func(c *dc) {
		for i := 0; i < 8; i++ {
			c.res("upsert", c.db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "name"}}, DoUpdates: clause.Assignments(map[string]any{"value": gorm.Expr("counters.value + 1")})}).Create(&Counter{Name: "n", Value: 1}))
			var got Counter
			c.res("read", c.db.First(&got, "name = ?", "n"))
			c.rec("value", got.Value)
		}
	}},
	{name: "large create", run: func(c *dc) {
		c.res("create", c.db.Create(&Event{Kind: "big", Payload: []byte(strings.Repeat("x", 9<<20))}))
	}},
	{name: "many rows in one create", run: func(c *dc) {
		es := make([]Event, 20000)
		for i := range es {
			es[i] = Event{Kind: strings.Repeat("k", 30), N: i, Payload: make([]byte, 400)}
		}
		c.res("create", c.db.CreateInBatches(&es, 20000))
	}},
	{name: "large result in a transaction", run: func(c *dc) {
		c.res("seed", c.db.Exec("INSERT INTO events (kind, n, payload) SELECT 'bulk', g, repeat('x', 200)::bytea FROM generate_series(1, 100000) g"))
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			var es []Event
			return tx.Find(&es).Error
		}))
	}},
	{name: "update returning many rows", run: func(c *dc) {
		c.res("seed", c.db.Exec("INSERT INTO events (kind, n, payload) SELECT 'bulk', g, repeat('x', 200)::bytea FROM generate_series(1, 100000) g"))
		var es []Event
		c.res("update", c.db.Model(&es).Clauses(clause.Returning{}).Where("kind = ?", "bulk").Update("n", gorm.Expr("n + 1")))
	}},
	{name: "deferred foreign key fails at commit", run: func(c *dc) {
		type DeferredChild struct {
			ID       uint
			ParentID int
		}
		ch := DeferredChild{ParentID: 1}
		c.res("create", c.db.Create(&ch))
		c.rec("id", ch.ID)
	}},
	{name: "statement longer than the RPC timeout", run: func(c *dc) {
		c.res("exec", c.db.Exec("DO $$ BEGIN PERFORM pg_sleep(6); END $$"))
	}},
}
