package integration

import (
	"gorm.io/gorm"
)

// tagged creates a user with tags a and b.
func (c *dc) tagged() User {
	c.t.Helper()
	return c.user("ann", func(u *User) { u.Tags = []Tag{{Name: "a"}, {Name: "b"}} })
}

func (c *dc) tagCount(u *User) {
	c.t.Helper()
	n := c.db.Model(u).Association("Tags").Count()
	c.rec("tag count", n)
}

var assocCases = []dcase{
	{name: "append many to many", run: func(c *dc) {
		u := c.tagged()
		c.err("append", c.db.Model(&u).Association("Tags").Append(&Tag{Name: "c"}, &Tag{Name: "d"}))
		c.tagCount(&u)
		c.allUsers()
	}},
	{name: "replace many to many", run: func(c *dc) {
		u := c.tagged()
		c.err("replace", c.db.Model(&u).Association("Tags").Replace([]Tag{{Name: "x"}}))
		c.allUsers()
	}},
	{name: "delete many to many", run: func(c *dc) {
		u := c.tagged()
		c.err("delete", c.db.Model(&u).Association("Tags").Delete(&u.Tags[0]))
		c.allUsers()
	}},
	{name: "clear many to many", run: func(c *dc) {
		u := c.tagged()
		c.err("clear", c.db.Model(&u).Association("Tags").Clear())
		c.tagCount(&u)
		c.allUsers()
	}},
	{name: "find with conditions", run: func(c *dc) {
		u := c.tagged()
		var tags []Tag
		c.err("find", c.db.Model(&u).Where("name = ?", "b").Association("Tags").Find(&tags))
		c.rec("tags", tags)
	}},
	{name: "append has many", run: func(c *dc) {
		u := c.user("ann")
		c.err("append", c.db.Model(&u).Association("Orders").Append(&Order{Number: 1}, &Order{Number: 2}))
		c.allUsers()
	}},
	{name: "replace has many", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Orders = []Order{{Number: 1}} })
		// The old order's user_id cannot become NULL: refused.
		c.err("replace", c.db.Model(&u).Association("Orders").Replace(&Order{Number: 2}))
		c.allUsers()
	}},
	{name: "unscoped clear has many", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Orders = []Order{{Number: 1}, {Number: 2}} })
		c.err("clear", c.db.Model(&u).Unscoped().Association("Orders").Clear())
		c.allUsers()
	}},
	{name: "replace has one", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Profile = &Profile{Bio: "old"} })
		c.err("replace", c.db.Model(&u).Association("Profile").Replace(&Profile{Bio: "new"}))
		c.allUsers()
	}},
	{name: "unscoped replace has one", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Profile = &Profile{Bio: "old"} })
		c.err("replace", c.db.Model(&u).Unscoped().Association("Profile").Replace(&Profile{Bio: "new"}))
		c.allUsers()
	}},
	{name: "append belongs to", run: func(c *dc) {
		u := c.user("ann")
		c.err("append", c.db.Model(&u).Association("Company").Append(&Company{Name: "acme"}))
		c.allUsers()
	}},
	{name: "replace and clear belongs to", run: func(c *dc) {
		u := c.user("ann", func(u *User) { u.Company = &Company{Name: "acme"} })
		c.err("replace", c.db.Model(&u).Association("Company").Replace(&Company{Name: "initech"}))
		c.allUsers()
		c.err("clear", c.db.Model(&u).Association("Company").Clear())
		c.allUsers()
	}},
	{name: "association of several users", run: func(c *dc) {
		a, b := c.user("ann"), c.user("bob")
		users := []User{a, b}
		c.err("append", c.db.Model(&users).Association("Tags").Append(&Tag{Name: "x"}, &Tag{Name: "y"}))
		c.allUsers()
	}},
	{name: "association without a primary key", run: func(c *dc) {
		c.err("append", c.db.Model(&User{}).Association("Tags").Append(&Tag{Name: "x"}))
		c.allUsers()
	}},
	{name: "unknown association", run: func(c *dc) {
		u := c.user("ann")
		c.err("append", c.db.Model(&u).Association("Nope").Append(&Tag{Name: "x"}))
	}},
	{name: "preload after changes", run: func(c *dc) {
		u := c.tagged()
		c.err("append", c.db.Model(&u).Association("Tags").Append(&Tag{Name: "c"}))
		var users []User
		c.res("preload", c.db.Preload("Tags").Preload("Profile").Find(&users))
		c.rec("tags", tagNames(users[0].Tags))
	}},
	{name: "joins after a write", run: func(c *dc) {
		c.user("ann", func(u *User) { u.Company = &Company{Name: "acme"} })
		var users []User
		c.res("joins", c.db.Joins("Company").Find(&users))
		c.rec("company", users[0].Company.Name)
	}},
	{name: "save with associations", run: func(c *dc) {
		u := c.tagged()
		u.Tags = append(u.Tags, Tag{Name: "c"})
		u.Profile = &Profile{Bio: "added"}
		c.res("save", c.db.Save(&u))
		c.allUsers()
	}},
}

// documentAudits records a document's audit rows.
func (c *dc) documentAudits() { c.all("audits", &[]AuditEntry{}) }

var hookCases = []dcase{
	{name: "create", run: func(c *dc) {
		d := Document{Title: "draft"}
		c.res("create", c.db.Create(&d))
		c.rec("ran", d.Ran)
		c.documentAudits()
	}},
	{name: "save", run: func(c *dc) {
		d := Document{Title: "draft"}
		c.res("create", c.db.Create(&d))
		d.Ran, d.Title = nil, "v1"
		c.res("save", c.db.Save(&d))
		c.rec("ran", d.Ran)
		c.documentAudits()
	}},
	{name: "updates", run: func(c *dc) {
		d := Document{Title: "draft"}
		c.res("create", c.db.Create(&d))
		d.Ran = nil
		c.res("updates", c.db.Model(&d).Updates(map[string]any{"revision": 2}))
		c.rec("ran", d.Ran)
		c.documentAudits()
	}},
	{name: "update column skips hooks", run: func(c *dc) {
		d := Document{Title: "draft"}
		c.res("create", c.db.Create(&d))
		d.Ran = nil
		c.res("update column", c.db.Model(&d).UpdateColumn("revision", 3))
		c.rec("ran", d.Ran)
		c.documentAudits()
	}},
	{name: "delete", run: func(c *dc) {
		d := Document{Title: "gone"}
		c.res("create", c.db.Create(&d))
		d.Ran = nil
		c.res("delete", c.db.Delete(&d))
		c.rec("ran", d.Ran)
		c.documentAudits()
	}},
	{name: "failing create hooks", run: func(c *dc) {
		for _, hook := range []string{"BeforeSave", "BeforeCreate", "AfterCreate", "AfterSave"} {
			d := Document{Title: "fail in " + hook, FailIn: hook}
			c.res("create failing in "+hook, c.db.Create(&d))
			c.rec("ran", d.Ran)
		}
		c.all("documents", &[]Document{})
		c.documentAudits()
	}},
	{name: "failing update hooks", run: func(c *dc) {
		d := Document{Title: "v1"}
		c.res("create", c.db.Create(&d))
		for _, hook := range []string{"BeforeUpdate", "AfterUpdate", "AfterSave"} {
			d.Ran, d.FailIn, d.Title = nil, hook, "must not stick"
			c.res("save failing in "+hook, c.db.Save(&d))
			c.rec("ran", d.Ran)
		}
		c.all("documents", &[]Document{})
		c.documentAudits()
	}},
	{name: "failing delete hook", run: func(c *dc) {
		d := Document{Title: "stays"}
		c.res("create", c.db.Create(&d))
		d.Ran, d.FailIn = nil, "AfterDelete"
		c.res("delete", c.db.Delete(&d))
		c.all("documents", &[]Document{})
		c.documentAudits()
	}},
	{name: "before hook writes", run: func(c *dc) {
		tk := Ticket{Subject: "printer on fire"}
		c.res("create", c.db.Create(&tk))
		c.res("update", c.db.Model(&tk).Update("status", "closed"))
		c.res("delete", c.db.Delete(&tk))
		c.all("tickets", &[]Ticket{})
		c.documentAudits()
	}},
	{name: "before hook write rolls back with its statement", run: func(c *dc) {
		c.res("create", c.db.Create(&Ticket{Subject: "dup"}))
		c.res("duplicate", c.db.Create(&Ticket{Subject: "dup"}))
		c.documentAudits()
	}},
	{name: "after hooks that do not write", run: func(c *dc) {
		n := Note{Body: "n"}
		c.res("create", c.db.Create(&n))
		c.res("update", c.db.Model(&n).Update("body", "m"))
		c.res("delete", c.db.Delete(&n))
		c.rec("ran", n.Ran)
		c.all("notes", &[]Note{})
	}},
	{name: "hooks in a transaction", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Document{Title: "one"}).Error; err != nil {
				return err
			}
			return tx.Create(&Document{Title: "two", FailIn: "AfterSave"}).Error
		}))
		c.all("documents", &[]Document{})
		c.documentAudits()
	}},
	{name: "skip hooks", run: func(c *dc) {
		d := Document{Title: "quiet", FailIn: "AfterCreate"}
		c.res("create", c.db.Session(&gorm.Session{SkipHooks: true}).Create(&d))
		c.rec("ran", d.Ran)
		c.documentAudits()
	}},
	{name: "application callback writes an audit row", variant: "appcb", run: func(c *dc) {
		c.res("create", c.db.Create(&Gadget{Name: "audited"}))
		c.all("gadgets", &[]Gadget{})
		c.all("gadget audits", &[]GadgetAudit{})
	}},
	{name: "application callback fails", variant: "appcb", run: func(c *dc) {
		c.res("create", c.db.Create(&Gadget{Name: "fail-noaudit"}))
		c.all("gadgets", &[]Gadget{})
	}},
	{name: "application callback fails after its audit row", variant: "appcb", run: func(c *dc) {
		c.res("create", c.db.Create(&Gadget{Name: "fail-after-audit"}))
		c.all("gadgets", &[]Gadget{})
		c.all("gadget audits", &[]GadgetAudit{})
	}},
	{name: "application callback on another model", variant: "appcb", run: func(c *dc) {
		c.widgets("a", "b")
		c.res("update", c.db.Model(&Widget{}).Where("name = ?", "a").Update("count", 5))
		c.allWidgets()
	}},
	{name: "application callback in a transaction", variant: "appcb", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Gadget{Name: "first"}).Error; err != nil {
				return err
			}
			return tx.Create(&Gadget{Name: "fail-second"}).Error
		}))
		c.res("after", c.db.Create(&Gadget{Name: "after"}))
		c.all("gadgets", &[]Gadget{})
		c.all("gadget audits", &[]GadgetAudit{})
	}},
	{name: "application callback with hooks and a unique conflict", variant: "appcb", run: func(c *dc) {
		c.res("first", c.db.Create(&Gadget{Name: "same"}))
		c.res("again", c.db.Create(&Gadget{Name: "same"}))
		c.all("gadget audits", &[]GadgetAudit{})
	}},
}
