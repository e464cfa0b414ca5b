package integration

import (
	"database/sql"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/flypg/flypg"
)

func (c *dc) tags() {
	c.t.Helper()
	var names []string
	c.res("tags", c.db.Raw("SELECT name FROM tags ORDER BY name").Scan(&names))
	c.rec("tags", names)
}

var rawCases = []dcase{
	{name: "exec insert", run: func(c *dc) {
		c.res("exec", c.db.Exec("INSERT INTO tags (name) VALUES (?), (?)", "a", "b"))
		c.tags()
	}},
	{name: "exec update", run: func(c *dc) {
		c.res("seed", c.db.Exec("INSERT INTO tags (name) VALUES ('a'), ('b'), ('c')"))
		c.res("exec", c.db.Exec("UPDATE tags SET name = upper(name) WHERE name <> ?", "b"))
		c.tags()
	}},
	{name: "exec delete", run: func(c *dc) {
		c.res("seed", c.db.Exec("INSERT INTO tags (name) VALUES ('a'), ('b'), ('c')"))
		c.res("exec", c.db.Exec("DELETE FROM tags WHERE name IN ?", []string{"a", "c"}))
		c.tags()
	}},
	{name: "insert returning one value", run: func(c *dc) {
		var id uint
		c.res("raw", c.db.Raw("INSERT INTO tags (name) VALUES (?) RETURNING id", "x").Scan(&id))
		c.rec("id", id)
		c.tags()
	}},
	{name: "insert returning rows", run: func(c *dc) {
		var tags []Tag
		c.res("raw", c.db.Raw("INSERT INTO tags (name) VALUES ('d'), ('e') RETURNING id, name").Scan(&tags))
		c.rec("tags", tags)
	}},
	{name: "writing CTE", run: func(c *dc) {
		var id uint
		c.res("insert", c.db.Raw("WITH x AS (INSERT INTO tags (name) VALUES (?) RETURNING id) SELECT id FROM x", "f").Scan(&id))
		var changed int
		c.res("update", c.db.Raw("WITH u AS (UPDATE tags SET name = name || '!' RETURNING 1) SELECT count(*) FROM u").Scan(&changed))
		c.rec("cte", []any{id, changed})
		c.tags()
	}},
	{name: "select into a struct", run: func(c *dc) {
		c.widgets("a", "b")
		var w Widget
		c.res("raw", c.db.Raw("SELECT * FROM widgets WHERE name = ?", "b").Scan(&w))
		c.rec("widget", w)
	}},
	{name: "select into a map", run: func(c *dc) {
		c.widgets("a")
		m := map[string]any{}
		c.res("raw", c.db.Raw("SELECT id, name, count FROM widgets").Scan(&m))
		c.rec("map", m)
	}},
	{name: "select into maps", run: func(c *dc) {
		c.widgets("a", "b")
		var ms []map[string]any
		c.res("raw", c.db.Raw("SELECT id, name, count, count * 1.5 AS f FROM widgets ORDER BY id").Scan(&ms))
		c.rec("maps", ms)
	}},
	{name: "rows", run: func(c *dc) {
		c.widgets("a", "b", "c")
		rows, err := c.db.Raw("SELECT id, name FROM widgets ORDER BY id").Rows()
		c.err("rows", err)
		if err != nil {
			return
		}
		defer rows.Close()
		var seen []string
		for rows.Next() {
			var w Widget
			c.err("scan rows", c.db.ScanRows(rows, &w))
			seen = append(seen, fmt.Sprint(w.ID, w.Name))
		}
		c.err("rows end", rows.Err())
		c.rec("seen", seen)
	}},
	{name: "row", run: func(c *dc) {
		c.widgets("a", "b")
		var n int
		c.err("row", c.db.Raw("SELECT count(*) FROM widgets").Row().Scan(&n))
		c.rec("count", n)
	}},
	{name: "row not found", run: func(c *dc) {
		var n int
		c.err("row", c.db.Raw("SELECT count FROM widgets WHERE id = 1").Row().Scan(&n))
	}},
	{name: "named arguments", run: func(c *dc) {
		c.res("seed", c.db.Exec("INSERT INTO tags (name) VALUES ('old')"))
		c.res("exec", c.db.Exec("UPDATE tags SET name = @new WHERE name = @old", sql.Named("new", "new"), sql.Named("old", "old")))
		c.res("map", c.db.Exec("INSERT INTO tags (name) VALUES (@n)", map[string]any{"n": "mapped"}))
		c.tags()
	}},
	{name: "IN with a slice", run: func(c *dc) {
		c.widgets("a", "b", "c")
		var names []string
		c.res("raw", c.db.Raw("SELECT name FROM widgets WHERE id IN ? ORDER BY id", []int{1, 3}).Scan(&names))
		c.rec("names", names)
	}},
	{name: "expressions and subqueries as arguments", run: func(c *dc) {
		c.widgets("a", "b")
		var n int
		c.res("raw", c.db.Raw("SELECT ? + (?)", gorm.Expr("1 + ?", 2), c.db.Model(&Widget{}).Select("count(*)")).Scan(&n))
		c.rec("n", n)
	}},
	{name: "DDL", run: func(c *dc) {
		c.res("create index", c.db.Exec("CREATE INDEX diff_tags_upper ON tags (upper(name))"))
		var n int64
		c.res("count", c.db.Raw("SELECT count(*) FROM pg_indexes WHERE indexname = 'diff_tags_upper'").Scan(&n))
		c.rec("indexes", n)
		c.res("drop index", c.db.Exec("DROP INDEX diff_tags_upper"))
	}},
	{name: "sequence functions", run: func(c *dc) {
		var a, b, d int64
		c.res("nextval", c.db.Raw("SELECT nextval('diff_seq')").Scan(&a))
		c.res("nextval", c.db.Raw("SELECT nextval('diff_seq')").Scan(&b))
		c.res("setval", c.db.Exec("SELECT setval('diff_seq', 41)"))
		c.res("nextval", c.db.Raw("SELECT pg_catalog.nextval('diff_seq')").Scan(&d))
		// Read on the primary: a replica sees a sequence as it was logged,
		// up to 32 values ahead (a by-design difference).
		var last int64
		c.res("last_value", c.db.Clauses(flypg.UsePrimary).Raw("SELECT last_value FROM diff_seq").Scan(&last))
		c.rec("values", []int64{a, b, d, last})
	}},
	{name: "nextval in a built query", run: func(c *dc) {
		c.widgets("a")
		var n int64
		c.res("select", c.db.Table("widgets").Select("nextval('diff_seq')").Limit(1).Scan(&n))
		c.rec("n", n)
	}},
	{name: "notify", run: func(c *dc) {
		c.res("exec", c.db.Exec("SELECT pg_notify('diff', 'payload')"))
		c.res("notify", c.db.Exec("NOTIFY diff, 'x'"))
	}},
	{name: "exec of a select", run: func(c *dc) {
		c.res("exec", c.db.Exec("SELECT 1"))
		c.res("exec with rows", c.db.Exec("SELECT * FROM generate_series(1, 3)"))
	}},
	{name: "transaction ID", run: func(c *dc) {
		var xid int64
		c.res("txid", c.db.Raw("SELECT txid_current()").Scan(&xid))
		c.rec("assigned", xid > 0)
	}},
	{name: "syntax error", run: func(c *dc) {
		c.res("exec", c.db.Exec("UPDATE tags SETT name = 1"))
		var n int
		c.res("raw", c.db.Raw("SELEC 1").Scan(&n))
	}},
	{name: "errors of the server", run: func(c *dc) {
		var n int
		c.res("division", c.db.Raw("SELECT 1 / 0").Scan(&n))
		c.res("missing table", c.db.Raw("SELECT * FROM nope").Scan(&n))
		c.res("exec missing table", c.db.Exec("DELETE FROM nope"))
		c.res("raise", c.db.Exec("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'custom'; END $$"))
	}},
	{name: "several statements in one exec", run: func(c *dc) {
		c.res("exec", c.db.Exec("INSERT INTO tags (name) VALUES ('a'); INSERT INTO tags (name) VALUES ('b')"))
		c.tags()
	}},
	{name: "row lock outside a transaction", run: func(c *dc) {
		c.widgets("a")
		var ws []Widget
		c.res("raw", c.db.Raw("SELECT * FROM widgets FOR UPDATE").Scan(&ws))
		c.res("built", c.db.Clauses(clause.Locking{Strength: "SHARE"}).Find(&ws))
		c.rec("widgets", ws)
	}},
	{name: "show explain values", run: func(c *dc) {
		var tz string
		c.res("show", c.db.Raw("SHOW TimeZone").Scan(&tz))
		var plan []string
		c.res("explain", c.db.Raw("EXPLAIN (COSTS OFF) SELECT * FROM widgets WHERE id = 1").Scan(&plan))
		var vals []int
		c.res("values", c.db.Raw("VALUES (1), (2)").Scan(&vals))
		c.rec("results", []any{tz, len(plan) > 0, vals})
	}},
	{name: "function created and called", run: func(c *dc) {
		c.res("create", c.db.Exec("CREATE FUNCTION diff_double(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2'"))
		var n int
		c.res("call", c.db.Raw("SELECT diff_double(21)").Scan(&n))
		c.rec("n", n)
		c.res("drop", c.db.Exec("DROP FUNCTION diff_double(int)"))
	}},
	{name: "writing function of our own, by hand", run: func(c *dc) {
		c.res("create", c.db.Exec("CREATE FUNCTION diff_add_tag(n text) RETURNS bigint LANGUAGE sql AS 'INSERT INTO tags (name) VALUES (n) RETURNING id'"))
		var id int64
		c.res("exec", c.db.Exec("SELECT diff_add_tag('by exec')"))
		c.res("raw", c.db.Clauses(flypg.UsePrimary).Raw("SELECT diff_add_tag('by raw')").Scan(&id))
		c.tags()
		c.res("drop", c.db.Exec("DROP FUNCTION diff_add_tag(text)"))
	}},
	{name: "unlogged table", run: func(c *dc) {
		c.res("insert", c.db.Exec("INSERT INTO scratch_unlogged VALUES (1, 'x')"))
		var note string
		c.res("read", c.db.Raw("SELECT note FROM scratch_unlogged WHERE id = 1").Scan(&note))
		c.rec("note", note)
	}},
	{name: "invalid UTF-8 argument", run: func(c *dc) {
		c.res("exec", c.db.Exec("INSERT INTO tags (name) VALUES (?)", string([]byte{0xff, 0xfe})))
	}},
}
