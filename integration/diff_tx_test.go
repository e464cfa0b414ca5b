package integration

import (
	"context"
	"database/sql"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// createIn creates a widget in a transaction.
func createIn(tx *gorm.DB, name string) error { return tx.Create(&Widget{Name: name}).Error }

// createThenFail creates a widget, then fails the transaction.
func createThenFail(tx *gorm.DB, name string) error {
	if err := createIn(tx, name); err != nil {
		return err
	}
	return errCase
}

var txCases = []dcase{
	{name: "commit", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			if err := createIn(tx, "a"); err != nil {
				return err
			}
			if err := createIn(tx, "b"); err != nil {
				return err
			}
			return tx.Model(&Widget{}).Where("name = ?", "a").Update("count", 3).Error
		}))
		c.allWidgets()
	}},
	{name: "an error rolls back", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error { return createThenFail(tx, "a") }))
		c.allWidgets()
	}},
	{name: "a failed statement rolls back", run: func(c *dc) {
		c.widgets("a")
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			if err := createIn(tx, "b"); err != nil {
				return err
			}
			return createIn(tx, "a")
		}))
		c.allWidgets()
	}},
	{name: "a panic rolls back", run: func(c *dc) {
		func() {
			defer func() { c.rec("recovered", fmt.Sprint(recover())) }()
			_ = c.db.Transaction(func(tx *gorm.DB) error {
				if err := createIn(tx, "a"); err != nil {
					return err
				}
				panic("boom")
			})
		}()
		c.allWidgets()
	}},
	{name: "nested transaction rolled back", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			if err := createIn(tx, "a"); err != nil {
				return err
			}
			c.err("inner", tx.Transaction(func(tx2 *gorm.DB) error { return createThenFail(tx2, "b") }))
			return createIn(tx, "c")
		}))
		c.allWidgets()
	}},
	{name: "nested transactions committed", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			return tx.Transaction(func(tx2 *gorm.DB) error {
				if err := createIn(tx2, "a"); err != nil {
					return err
				}
				return tx2.Transaction(func(tx3 *gorm.DB) error { return createIn(tx3, "b") })
			})
		}))
		c.allWidgets()
	}},
	{name: "nested failure after a unique conflict", run: func(c *dc) {
		c.widgets("a")
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			c.err("inner", tx.Transaction(func(tx2 *gorm.DB) error { return createIn(tx2, "a") }))
			return createIn(tx, "b")
		}))
		c.allWidgets()
	}},
	{name: "manual begin and commit", run: func(c *dc) {
		tx := c.db.Begin()
		c.res("begin", tx)
		c.res("create", tx.Create(&Widget{Name: "a"}))
		c.res("commit", tx.Commit())
		c.allWidgets()
	}},
	{name: "manual begin and rollback", run: func(c *dc) {
		tx := c.db.Begin()
		c.res("create", tx.Create(&Widget{Name: "a"}))
		c.res("rollback", tx.Rollback())
		c.allWidgets()
	}},
	{name: "savepoints", run: func(c *dc) {
		tx := c.db.Begin()
		c.res("a", tx.Create(&Widget{Name: "a"}))
		c.res("savepoint", tx.SavePoint("sp1"))
		c.res("b", tx.Create(&Widget{Name: "b"}))
		c.res("rollback to", tx.RollbackTo("sp1"))
		c.res("c", tx.Create(&Widget{Name: "c"}))
		c.res("commit", tx.Commit())
		c.allWidgets()
	}},
	{name: "reads see the transaction's writes", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			for _, n := range []string{"a", "b"} {
				if err := createIn(tx, n); err != nil {
					return err
				}
				var count int64
				c.res("count", tx.Model(&Widget{}).Count(&count))
				c.rec("count", count)
			}
			return nil
		}))
	}},
	{name: "statement after an error in the transaction", run: func(c *dc) {
		c.widgets("a")
		tx := c.db.Begin()
		c.res("duplicate", tx.Create(&Widget{Name: "a"}))
		c.res("next", tx.Create(&Widget{Name: "b"}))
		c.res("commit", tx.Commit())
		c.allWidgets()
	}},
	{name: "read only", run: func(c *dc) {
		c.widgets("a")
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			var ws []Widget
			c.res("find", tx.Find(&ws))
			c.rec("widgets", ws)
			return nil
		}, &sql.TxOptions{ReadOnly: true}))
	}},
	{name: "read only refuses writes", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error { return createIn(tx, "a") }, &sql.TxOptions{ReadOnly: true}))
		c.allWidgets()
	}},
	{name: "read only serializable", run: func(c *dc) {
		c.widgets("a", "b")
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			var n int64
			c.res("count", tx.Model(&Widget{}).Count(&n))
			c.rec("count", n)
			return nil
		}, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable}))
	}},
	{name: "repeatable read", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error { return createIn(tx, "a") }, &sql.TxOptions{Isolation: sql.LevelRepeatableRead}))
		c.allWidgets()
	}},
	{name: "serializable", run: func(c *dc) {
		c.widgets("a")
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			return tx.Model(&Widget{}).Where("name = ?", "a").Update("count", 9).Error
		}, &sql.TxOptions{Isolation: sql.LevelSerializable}))
		c.allWidgets()
	}},
	{name: "row lock in a transaction", run: func(c *dc) {
		c.widgets("a")
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			var w Widget
			if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&w).Error; err != nil {
				return err
			}
			return tx.Model(&w).Update("count", w.Count+1).Error
		}))
		c.allWidgets()
	}},
	{name: "nested transactions disabled", run: func(c *dc) {
		c.err("tx", c.db.Session(&gorm.Session{DisableNestedTransaction: true}).Transaction(func(tx *gorm.DB) error {
			if err := createIn(tx, "a"); err != nil {
				return err
			}
			c.err("inner", tx.Transaction(func(tx2 *gorm.DB) error { return createThenFail(tx2, "b") }))
			return nil
		}))
		c.allWidgets()
	}},
	{name: "commit twice", run: func(c *dc) {
		tx := c.db.Begin()
		c.res("create", tx.Create(&Widget{Name: "a"}))
		c.res("commit", tx.Commit())
		c.res("commit again", tx.Commit())
		c.res("rollback after commit", tx.Rollback())
		c.allWidgets()
	}},
	{name: "transaction-level advisory lock", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			var got bool
			c.res("lock", tx.Raw("SELECT pg_try_advisory_xact_lock(4242)").Scan(&got))
			c.rec("locked", got)
			return createIn(tx, "a")
		}))
		c.allWidgets()
	}},
	{name: "cancelled context inside", run: func(c *dc) {
		ctx, cancel := context.WithCancel(context.Background())
		c.err("tx", c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := createIn(tx, "a"); err != nil {
				return err
			}
			cancel()
			return createIn(tx, "b")
		}))
		c.allWidgets()
	}},
	{name: "many statements", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			for i := 0; i < 50; i++ {
				if err := tx.Create(&Event{Kind: "k", N: i}).Error; err != nil {
					return err
				}
			}
			return tx.Model(&Event{}).Where("n % 2 = 0").Update("kind", "even").Error
		}))
		var kinds []struct {
			Kind string
			N    int
		}
		c.res("group", c.db.Model(&Event{}).Select("kind, count(*) AS n").Group("kind").Order("kind").Scan(&kinds))
		c.rec("kinds", kinds)
	}},
	{name: "batches in a transaction", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			ws := []Widget{{Name: "a"}, {Name: "b"}, {Name: "c"}}
			return tx.CreateInBatches(&ws, 2).Error
		}))
		c.allWidgets()
	}},
	{name: "upsert and delete in a transaction", run: func(c *dc) {
		c.err("tx", c.db.Transaction(func(tx *gorm.DB) error {
			for i := 0; i < 3; i++ {
				if err := tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&Counter{Name: "c", Value: int64(i)}).Error; err != nil {
					return err
				}
			}
			return tx.Delete(&Counter{}, "value < ?", 1).Error
		}))
		c.all("counters", &[]Counter{})
	}},
	{name: "begin with a failing option", run: func(c *dc) {
		tx := c.db.Begin(&sql.TxOptions{Isolation: sql.LevelLinearizable})
		c.res("begin", tx)
		if tx.Error == nil {
			c.res("rollback", tx.Rollback())
		}
	}},
}
