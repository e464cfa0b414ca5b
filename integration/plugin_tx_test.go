package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/flypg/flypg/fly"
)

var errBoom = errors.New("boom")

func widgetNames(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var names []string
	ok(t, db.Model(&Widget{}).Order("name").Pluck("name", &names))
	return names
}

func wantWidgets(t *testing.T, db *gorm.DB, want ...string) {
	t.Helper()
	if got := widgetNames(t, db); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("widgets read back as %v, want %v", got, want)
	}
}

// scenarioTransactions: Transaction with commit, with an error and with a
// panic; nested transactions (savepoints); Begin/Commit/Rollback and
// SavePoint/RollbackTo by hand; a failing statement inside; an isolation
// level.
func scenarioTransactions(t *testing.T, db *gorm.DB, tr *transcript) {
	noErr(t, db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Widget{Name: "tx-a", Count: 1}).Error; err != nil {
			return err
		}
		var w Widget
		if err := tx.Where("name = ?", "tx-a").First(&w).Error; err != nil {
			return fmt.Errorf("the transaction does not read its own write: %w", err)
		}
		return tx.Model(&w).Update("count", 2).Error
	}))
	var a Widget
	ok(t, db.Where("name = ?", "tx-a").First(&a))
	if a.Count != 2 {
		t.Fatalf("committed transaction read back as %+v", a)
	}
	tr.add("commit", widgetNames(t, db))

	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Widget{Name: "tx-b"}).Error; err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Transaction returned %v, want the fn's error", err)
	}
	wantWidgets(t, db, "tx-a")

	func() {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Fatalf("recovered %v, want the fn's panic", r)
			}
		}()
		_ = db.Transaction(func(tx *gorm.DB) error {
			tx.Create(&Widget{Name: "tx-c"})
			panic("kaboom")
		})
	}()
	wantWidgets(t, db, "tx-a")
	tr.add("rolled back", widgetNames(t, db))

	// Nested: the failing inner transaction rolls back to its savepoint,
	// the outer one commits the rest.
	noErr(t, db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Widget{Name: "outer-1"}).Error; err != nil {
			return err
		}
		if err := tx.Transaction(func(tx2 *gorm.DB) error {
			if err := tx2.Create(&Widget{Name: "inner-bad"}).Error; err != nil {
				return err
			}
			return errBoom
		}); !errors.Is(err, errBoom) {
			return fmt.Errorf("inner transaction returned %v", err)
		}
		if err := tx.Transaction(func(tx2 *gorm.DB) error {
			return tx2.Create(&Widget{Name: "inner-ok"}).Error
		}); err != nil {
			return err
		}
		return tx.Create(&Widget{Name: "outer-2"}).Error
	}))
	wantWidgets(t, db, "inner-ok", "outer-1", "outer-2", "tx-a")

	// A nested transaction that panics is rolled back to its savepoint and
	// the panic goes on up, rolling back the outer one too.
	func() {
		defer func() {
			if r := recover(); r != "inner kaboom" {
				t.Fatalf("recovered %v", r)
			}
		}()
		_ = db.Transaction(func(tx *gorm.DB) error {
			tx.Create(&Widget{Name: "outer-3"})
			return tx.Transaction(func(tx2 *gorm.DB) error {
				tx2.Create(&Widget{Name: "inner-3"})
				panic("inner kaboom")
			})
		})
	}()
	wantWidgets(t, db, "inner-ok", "outer-1", "outer-2", "tx-a")
	tr.add("nested", widgetNames(t, db))

	tx := db.Begin()
	ok(t, tx)
	ok(t, tx.Create(&Widget{Name: "manual-1"}))
	ok(t, tx.Commit())
	wantWidgets(t, db, "inner-ok", "manual-1", "outer-1", "outer-2", "tx-a")

	tx = db.Begin()
	ok(t, tx.Create(&Widget{Name: "manual-2"}))
	ok(t, tx.Rollback())
	wantWidgets(t, db, "inner-ok", "manual-1", "outer-1", "outer-2", "tx-a")

	tx = db.Begin()
	ok(t, tx.Create(&Widget{Name: "sp-1"}))
	ok(t, tx.SavePoint("sp"))
	ok(t, tx.Create(&Widget{Name: "sp-2"}))
	ok(t, tx.RollbackTo("sp"))
	ok(t, tx.Create(&Widget{Name: "sp-3"}))
	ok(t, tx.Commit())
	wantWidgets(t, db, "inner-ok", "manual-1", "outer-1", "outer-2", "sp-1", "sp-3", "tx-a")
	tr.add("manual", widgetNames(t, db))

	// A failing statement aborts the whole transaction.
	err = db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Widget{Name: "dup-ok"}).Error; err != nil {
			return err
		}
		return tx.Create(&Widget{Name: "tx-a"}).Error
	})
	if !errors.Is(err, gorm.ErrDuplicatedKey) {
		t.Fatalf("transaction with a duplicate returned %v", err)
	}
	if n := countRows(t, db, "widgets", "name = ?", "dup-ok"); n != 0 {
		t.Fatal("the statement before the failing one was committed")
	}

	var iso string
	noErr(t, db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Raw("SHOW transaction_isolation").Scan(&iso).Error; err != nil {
			return err
		}
		return tx.Create(&Widget{Name: "serial"}).Error
	}, &sql.TxOptions{Isolation: sql.LevelSerializable}))
	if iso != "serializable" {
		t.Fatalf("transaction isolation %q", iso)
	}
	wantWidgets(t, db, "inner-ok", "manual-1", "outer-1", "outer-2", "serial", "sp-1", "sp-3", "tx-a")
	tr.add("final", widgetNames(t, db))
}

// TestTransactions: transactions through the replica-region handle (commit,
// rollback by error and by panic, savepoints, by hand) give the results of
// plain GORM on the primary, and each commit is read back locally at once.
func TestTransactions(t *testing.T) {
	t.Parallel()
	runCompared(t, newEnv(t), scenarioTransactions)
}

// TestTransactionRouting: a transaction of the replica-region handle runs
// whole on the primary (its reads too), commits with one replication wait,
// and a rollback waits for nothing.
func TestTransactionRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rpcs, waits := e.counted(func() {
		noErr(t, e.replica.Transaction(func(tx *gorm.DB) error {
			for i := range 3 {
				if err := tx.Create(&Widget{Name: fmt.Sprintf("w%d", i)}).Error; err != nil {
					return err
				}
			}
			if inRecovery(t, tx) {
				return errors.New("a read inside a forwarded transaction ran on the replica")
			}
			var n int64
			if err := tx.Model(&Widget{}).Count(&n).Error; err != nil || n != 3 {
				return fmt.Errorf("count inside the transaction: %d, %v", n, err)
			}
			return nil
		}))
	})
	if waits != 1 {
		t.Errorf("a committed transaction waited %d times for replication, want once", waits)
	}
	// BEGIN travels with the first statement: one round trip per
	// statement, and one for COMMIT.
	if rpcs != 6 {
		t.Errorf("transaction of 3 inserts and 2 reads took %d round trips, want 6", rpcs)
	}
	wantWidgets(t, e.replica, "w0", "w1", "w2")

	_, waits = e.counted(func() {
		err := e.replica.Transaction(func(tx *gorm.DB) error {
			tx.Create(&Widget{Name: "rolled-back"})
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Errorf("Transaction: %v", err)
		}
	})
	if waits != 0 {
		t.Errorf("a rolled-back transaction waited %d times", waits)
	}
	if n := countRows(t, e.plain, "widgets", "name = ?", "rolled-back"); n != 0 {
		t.Fatal("rolled-back row is on the primary")
	}
}

// TestReadOnlyTransaction: a read-only transaction of the replica-region
// handle stays on the local replica, reads there, and a write inside it
// fails with SQLSTATE 25006 without reaching the primary.
func TestReadOnlyTransaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ok(t, e.replica.Create(&Widget{Name: "seed", Count: 1}))
	ro := &sql.TxOptions{ReadOnly: true}

	rpcs, waits := e.counted(func() {
		err := e.replica.Transaction(func(tx *gorm.DB) error {
			if !inRecovery(t, tx) {
				return errors.New("read-only transaction runs on the primary")
			}
			var w Widget
			if err := tx.Where("name = ?", "seed").First(&w).Error; err != nil {
				return fmt.Errorf("read-only transaction cannot read: %w", err)
			}
			return tx.Create(&Widget{Name: "forbidden"}).Error
		}, ro)
		if sqlState(err) != "25006" {
			t.Errorf("write in a read-only transaction: %v, want SQLSTATE 25006", err)
		}
	})
	if rpcs != 0 || waits != 0 {
		t.Errorf("read-only transaction: %d round trips, %d waits; want it local", rpcs, waits)
	}

	// By hand, and with Exec.
	rpcs, _ = e.counted(func() {
		tx := e.replica.Begin(ro)
		ok(t, tx)
		if !inRecovery(t, tx) {
			t.Error("Begin(ReadOnly) runs on the primary")
		}
		if err := tx.Exec("UPDATE widgets SET count = 99").Error; sqlState(err) != "25006" {
			t.Errorf("Exec in a read-only transaction: %v, want SQLSTATE 25006", err)
		}
		ok(t, tx.Rollback())
	})
	if rpcs != 0 {
		t.Errorf("Begin(ReadOnly) by hand took %d round trips", rpcs)
	}

	// A transaction begun under fly.Local stays local as well.
	local := e.replica.WithContext(fly.Local(context.Background()))
	err := local.Transaction(func(tx *gorm.DB) error {
		if !inRecovery(t, tx) {
			return errors.New("fly.Local transaction runs on the primary")
		}
		return tx.Create(&Widget{Name: "forbidden"}).Error
	})
	if sqlState(err) != "25006" {
		t.Errorf("write in a fly.Local transaction on the replica: %v, want SQLSTATE 25006", err)
	}

	if n := countRows(t, e.plain, "widgets", "name = ?", "forbidden"); n != 0 {
		t.Fatal("a write of a read-only transaction reached the primary")
	}
	var w Widget
	ok(t, e.plain.Where("name = ?", "seed").First(&w))
	if w.Count != 1 {
		t.Fatalf("read-only Exec changed the primary: %+v", w)
	}
}
