package integration

import (
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

var updateCases = []dcase{
	{name: "save every column", run: func(c *dc) {
		u := c.user("ann")
		u.Name, u.Age = "anna", 0
		c.res("save", c.db.Save(&u))
		c.allUsers()
	}},
	{name: "update one column", run: func(c *dc) {
		ws := c.widgets("a", "b")
		c.res("update", c.db.Model(&ws[0]).Update("count", 5))
		c.rec("model", ws[0])
		c.allWidgets()
	}},
	{name: "update with conditions", run: func(c *dc) {
		c.widgets("a", "b", "c", "d")
		c.res("update", c.db.Model(&Widget{}).Where("count > ?", 2).Update("count", 0))
		c.allWidgets()
	}},
	{name: "updates from a struct skip zero fields", run: func(c *dc) {
		u := c.user("ann")
		c.res("updates", c.db.Model(&u).Updates(User{Name: "anna", Age: 0}))
		c.rec("model", rowOf(u))
		c.allUsers()
	}},
	{name: "updates from a map write zero values", run: func(c *dc) {
		u := c.user("ann")
		c.res("updates", c.db.Model(&u).Updates(map[string]any{"age": 0, "name": "anna"}))
		c.allUsers()
	}},
	{name: "update with an expression", run: func(c *dc) {
		ws := c.widgets("a", "b")
		c.res("update", c.db.Model(&ws[1]).Update("count", gorm.Expr("count * ? + ?", 3, 1)))
		c.allWidgets()
	}},
	{name: "updates with expressions", run: func(c *dc) {
		ws := c.widgets("a")
		c.res("updates", c.db.Model(&ws[0]).Updates(map[string]any{"count": gorm.Expr("count + 10"), "name": gorm.Expr("upper(name)")}))
		c.allWidgets()
	}},
	{name: "update column", run: func(c *dc) {
		u := c.user("ann")
		c.res("update column", c.db.Model(&u).UpdateColumn("age", gorm.Expr("age + ?", 1)))
		c.allUsers()
	}},
	{name: "update columns", run: func(c *dc) {
		u := c.user("ann")
		c.res("update columns", c.db.Model(&u).UpdateColumns(User{Name: "anna", Age: 41}))
		c.allUsers()
	}},
	{name: "select every field", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Age = 50 })
		c.res("updates", c.db.Model(&u).Select("*").Omit("CreatedAt", "ID").Updates(User{Name: "anna", Email: "anna@example.com"}))
		c.allUsers()
	}},
	{name: "omit a field", run: func(c *dc) {
		u := c.user("ann")
		c.res("updates", c.db.Model(&u).Omit("Age").Updates(map[string]any{"name": "anna", "age": 99}))
		c.allUsers()
	}},
	{name: "select a zero field", run: func(c *dc) {
		u := c.user("ann")
		c.res("updates", c.db.Model(&u).Select("Age").Updates(User{Age: 0, Name: "ignored"}))
		c.allUsers()
	}},
	{name: "without conditions refused", run: func(c *dc) {
		c.widgets("a")
		c.res("update", c.db.Model(&Widget{}).Update("count", 1))
		c.allWidgets()
	}},
	{name: "global update allowed", run: func(c *dc) {
		c.widgets("a", "b")
		c.res("update", c.db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&Widget{}).Update("count", 7))
		c.allWidgets()
	}},
	{name: "update returning rows", run: func(c *dc) {
		c.widgets("a", "b", "c")
		var ws []Widget
		c.res("update", c.db.Model(&ws).Clauses(clause.Returning{}).Where("count >= ?", 2).Update("count", gorm.Expr("count + 100")))
		c.rec("returned", ws)
	}},
	{name: "update returning columns into the model", run: func(c *dc) {
		ws := c.widgets("a")
		w := Widget{ID: ws[0].ID}
		c.res("update", c.db.Model(&w).Clauses(clause.Returning{Columns: []clause.Column{{Name: "name"}, {Name: "count"}}}).Update("count", 12))
		c.rec("model", w)
	}},
	{name: "update from a subquery", run: func(c *dc) {
		c.widgets("a", "b", "c")
		c.res("update", c.db.Model(&Widget{}).Where("name = ?", "a").Update("count", c.db.Model(&Widget{}).Select("max(count) + 1")))
		c.allWidgets()
	}},
	{name: "update matching nothing", run: func(c *dc) {
		c.widgets("a")
		c.res("update", c.db.Model(&Widget{}).Where("id = ?", 999).Update("count", 5))
	}},
	{name: "update to a taken unique value", run: func(c *dc) {
		ws := c.widgets("a", "b")
		c.res("update", c.db.Model(&ws[1]).Update("name", "a"))
		c.allWidgets()
	}},
	{name: "update violating a check", run: func(c *dc) {
		a := Account{Owner: "x", Balance: 5}
		c.res("create", c.db.Create(&a))
		c.res("update", c.db.Model(&a).Update("balance", gorm.Expr("balance - ?", 10)))
		c.all("accounts", &[]Account{})
	}},
	{name: "update by primary keys", run: func(c *dc) {
		c.widgets("a", "b", "c")
		c.res("update", c.db.Model(&Widget{}).Where("id IN ?", []uint{1, 3}).Update("count", 0))
		c.allWidgets()
	}},
	{name: "update through Table", run: func(c *dc) {
		c.widgets("a", "b")
		c.res("update", c.db.Table("widgets").Where("name = ?", "b").Updates(map[string]any{"count": 44}))
		c.allWidgets()
	}},
	{name: "soft-deleted rows are not updated", run: func(c *dc) {
		u := c.user("ann")
		c.res("delete", c.db.Delete(&u))
		c.res("update", c.db.Model(&User{}).Where("id = ?", u.ID).Update("age", 1))
		c.res("unscoped update", c.db.Unscoped().Model(&User{}).Where("id = ?", u.ID).Update("age", 2))
		c.allUsers()
	}},
	{name: "set a column to NULL", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Company = &Company{Name: "acme"} })
		c.res("update", c.db.Model(&u).Update("company_id", nil))
		c.allUsers()
	}},
	{name: "update a timestamp", run: func(c *dc) {
		u := c.user("ann")
		c.res("update", c.db.Model(&u).Update("last_login_at", t0))
		var got User
		c.res("read", c.db.First(&got, u.ID))
		c.rec("login", ts(got.LastLoginAt))
	}},
	{name: "update many rows, read each", run: func(c *dc) {
		ws := c.widgets("a", "b", "c", "d", "e")
		for i := range ws {
			c.res("update", c.db.Model(&ws[i]).Update("count", gorm.Expr("count + ?", i*10)))
			var got Widget
			c.res("read", c.db.First(&got, ws[i].ID))
			c.rec("read", got)
		}
	}},
	{name: "updates with full save associations", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Profile = &Profile{Bio: "old"} })
		u.Profile.Bio = "new"
		u.Name = "anna"
		c.res("updates", c.db.Session(&gorm.Session{FullSaveAssociations: true}).Updates(&u))
		c.allUsers()
	}},
}

var deleteCases = []dcase{
	{name: "soft delete", run: func(c *dc) {
		u := c.user("ann")
		c.res("delete", c.db.Delete(&u))
		var n int64
		c.res("count", c.db.Model(&User{}).Count(&n))
		c.rec("visible", n)
		c.allUsers()
	}},
	{name: "soft delete with conditions", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Age = 20 })
		c.user("bob", func(u *User) { u.Age = 40 })
		c.res("delete", c.db.Where("age > ?", 30).Delete(&User{}))
		c.allUsers()
	}},
	{name: "hard delete", run: func(c *dc) {
		u := c.user("ann")
		c.res("delete", c.db.Unscoped().Delete(&u))
		c.allUsers()
	}},
	{name: "hard delete of a soft-deleted row", run: func(c *dc) {
		u := c.user("ann")
		c.res("soft", c.db.Delete(&u))
		c.res("hard", c.db.Unscoped().Delete(&User{}, u.ID))
		c.allUsers()
	}},
	{name: "by primary key", run: func(c *dc) {
		c.widgets("a", "b", "c")
		c.res("delete", c.db.Delete(&Widget{}, 2))
		c.allWidgets()
	}},
	{name: "by primary keys", run: func(c *dc) {
		c.widgets("a", "b", "c")
		c.res("delete", c.db.Delete(&Widget{}, []uint{1, 3}))
		c.allWidgets()
	}},
	{name: "a slice of models", run: func(c *dc) {
		ws := c.widgets("a", "b", "c")
		c.res("delete", c.db.Delete(ws[:2]))
		c.allWidgets()
	}},
	{name: "returning", run: func(c *dc) {
		c.widgets("a", "b", "c")
		var gone []Widget
		c.res("delete", c.db.Clauses(clause.Returning{}).Where("count > ?", 1).Delete(&gone))
		c.rec("returned", gone)
		c.allWidgets()
	}},
	{name: "matching nothing", run: func(c *dc) {
		c.res("delete", c.db.Delete(&Widget{}, 99))
	}},
	{name: "without conditions refused", run: func(c *dc) {
		c.widgets("a")
		c.res("delete", c.db.Delete(&Widget{}))
		c.allWidgets()
	}},
	{name: "global delete allowed", run: func(c *dc) {
		c.widgets("a", "b")
		c.res("delete", c.db.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(&Widget{}))
		c.allWidgets()
	}},
	{name: "with associations", run: func(c *dc) {
		u := c.user("ann", func(u *User) {
			u.Profile = &Profile{Bio: "b"}
			u.Tags = []Tag{{Name: "t"}}
		})
		c.res("delete", c.db.Select("Profile", "Tags").Delete(&u))
		c.allUsers()
	}},
	{name: "cascade", run: func(c *dc) {
		u := c.user("ann")
		o := Order{UserID: u.ID, Number: 1, Lines: []OrderLine{{LineNo: 1, SKU: "a", Qty: 1, PriceCents: 1}}}
		c.res("order", c.db.Create(&o))
		c.res("delete", c.db.Delete(&o))
		c.all("lines", &[]OrderLine{}, "line_no")
		c.all("orders", &[]Order{}, "number")
	}},
	{name: "restore a soft-deleted row", run: func(c *dc) {
		u := c.user("ann")
		c.res("delete", c.db.Delete(&u))
		c.res("restore", c.db.Unscoped().Model(&User{}).Where("id = ?", u.ID).Update("deleted_at", nil))
		var got User
		c.res("first", c.db.First(&got, u.ID))
		c.rec("restored", rowOf(got))
	}},
	{name: "referenced row", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Company = &Company{Name: "acme"} })
		c.res("delete company", c.db.Delete(&Company{}, 1))
		c.allUsers()
	}},
	{name: "with a map condition", run: func(c *dc) {
		c.widgets("a", "b")
		c.res("delete", c.db.Where(map[string]any{"name": "b"}).Delete(&Widget{}))
		c.allWidgets()
	}},
	{name: "with a subquery", run: func(c *dc) {
		c.widgets("a", "b", "c")
		c.res("delete", c.db.Where("count < (?)", c.db.Model(&Widget{}).Select("max(count)")).Delete(&Widget{}))
		c.allWidgets()
	}},
	{name: "delete then create the same key", run: func(c *dc) {
		ws := c.widgets("a")
		c.res("delete", c.db.Delete(&ws[0]))
		c.widgets("a")
		c.allWidgets()
	}},
}
