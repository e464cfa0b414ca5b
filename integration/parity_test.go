package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/testkit"
)

// Gadget is written by an application callback's audit row and checked by
// an application callback that may fail, both registered between GORM's
// statement and its after-hooks.
type Gadget struct {
	ID   uint
	Name string `gorm:"size:60;not null;uniqueIndex"`
}

// GadgetAudit is the row the application callback writes in GORM's
// implicit transaction.
type GadgetAudit struct {
	ID     uint
	Gadget string `gorm:"size:60;not null"`
}

// Unscannable has a RETURNING default its field cannot hold: a text value
// for an int. GORM's scan after the INSERT fails.
type Unscannable struct {
	ID  uint
	Val int `gorm:"type:text;default:md5('x')"`
}

// Drifted declares an int default, but its table (made by hand) has a text
// column: the model does not say the scan can fail.
type Drifted struct {
	ID  uint
	Val int `gorm:"default:md5('x')"`
}

var errAppCallback = errors.New("application callback refused the gadget")

// gadgetCallback writes an audit row for every gadget unless its name says
// "noaudit", then fails when the name starts with "fail".
func gadgetCallback(db *gorm.DB) {
	g, isGadget := db.Statement.Dest.(*Gadget)
	if !isGadget || db.Error != nil {
		return
	}
	if !strings.Contains(g.Name, "noaudit") {
		if err := db.Session(&gorm.Session{NewDB: true}).Create(&GadgetAudit{Gadget: g.Name}).Error; err != nil {
			db.AddError(err)
			return
		}
	}
	if strings.HasPrefix(g.Name, "fail") {
		db.AddError(errAppCallback)
	}
}

func registerGadgetCallback(t testing.TB, db *gorm.DB) {
	t.Helper()
	if err := db.Callback().Create().After("gorm:create").Before("gorm:after_create").Register("app:gadget", gadgetCallback); err != nil {
		t.Fatal(err)
	}
}

// TestCommitAfterStatementOnlyWhenNothingCanFail: COMMIT travels with the
// statement only when nothing after it in GORM's chain can fail or write.
// A RETURNING value the model cannot hold, an application callback that
// fails and one that writes in the implicit transaction all behave as in
// plain GORM: failures roll the row back, the audit row commits with it.
func TestCommitAfterStatementOnlyWhenNothingCanFail(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}, &Gadget{}, &GadgetAudit{}, &Unscannable{}}})
	ref := openGORM(t, e.cluster.Primary.DSN(createDatabase(t, e.cluster, "ref_commit_after")))
	noErr(t, ref.AutoMigrate(&Widget{}, &Gadget{}, &GadgetAudit{}, &Unscannable{}))
	registerGadgetCallback(t, e.replica)
	registerGadgetCallback(t, ref)

	type outcome struct {
		err      string
		gadgets  int64
		audits   int64
		scanRows int64
	}
	run := func(db *gorm.DB, name string) outcome {
		var o outcome
		switch name {
		case "unscannable":
			err := db.Create(&Unscannable{}).Error
			o.err = errClass(err)
		default:
			err := db.Create(&Gadget{Name: name}).Error
			o.err = errClass(err)
		}
		o.gadgets = countRows(t, db, "gadgets", "name = ?", name)
		o.audits = countRows(t, db, "gadget_audits", "gadget = ?", name)
		o.scanRows = countRows(t, db, "unscannables", "")
		return o
	}
	for _, name := range []string{"unscannable", "fail-noaudit", "fail-after-audit", "audited", "plain-noaudit"} {
		got, want := run(e.replica, name), run(ref, name)
		if got != want {
			t.Errorf("%s: through the plugin %+v, plain GORM %+v", name, got, want)
		}
		// What the replica-region app read is what the primary has.
		if p := countRows(t, e.plain, "gadgets", "name = ?", name); p != got.gadgets {
			t.Errorf("%s: the primary has %d gadgets, the replica read %d", name, p, got.gadgets)
		}
	}
	// The create chain holds the application's callback, which may fail or
	// write for any model: COMMIT has a round trip of its own.
	for _, w := range []any{&Widget{Name: "widget"}, &Gadget{Name: "two-noaudit"}} {
		rpcs, _ := e.counted(func() { ok(t, e.replica.Create(w)) })
		if rpcs != 2 {
			t.Errorf("Create of %T with an application callback in the chain: %d round trips, want 2", w, rpcs)
		}
	}
	// Without it, COMMIT travels with the INSERT again.
	noErr(t, e.replica.Callback().Create().Remove("app:gadget"))
	rpcs, _ := e.counted(func() { ok(t, e.replica.Create(&Widget{Name: "fast"})) })
	if rpcs != 1 {
		t.Errorf("Create of a widget after the callback was removed: %d round trips, want 1", rpcs)
	}
}

// TestCommittedWriteNeverReportedFailed: when the scan of a RETURNING value
// fails after COMMIT travelled with the statement — the table's column is
// text where the model declares an int, so nothing warned flypg — the
// caller learns that the write committed (CommittedError, wrapping GORM's
// error), and reads it back.
func TestCommittedWriteNeverReportedFailed(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	ok(t, e.plain.Exec("CREATE TABLE drifteds (id bigserial PRIMARY KEY, val text DEFAULT md5('x'))"))
	e.waitReplicated()
	err := e.replica.Create(&Drifted{}).Error
	var ce *flypg.CommittedError
	if !errors.As(err, &ce) || ce.LSN == 0 {
		t.Fatalf("Create with a drifted column: %v; want a CommittedError", err)
	}
	if strings.Contains(err.Error(), "already committed") {
		t.Errorf("the error still carries the failed rollback: %v", err)
	}
	if n := countRows(t, e.replica, "drifteds", ""); n != 1 {
		t.Fatalf("the committed row read back %d times on the replica", n)
	}
}

// TestAdvisoryLocks: lock functions run on the primary, where they exclude
// the primary region's sessions; a session-level lock outside a
// transaction, and any lock in a read-only (local) transaction, fail with
// ErrAdvisoryLock instead of locking the replica alone.
func TestAdvisoryLocks(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	held := func(key int) bool { // by any session of the primary
		var n int64
		ok(t, e.plain.Raw("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = ?", key).Scan(&n))
		return n > 0
	}
	localLocks := func() int64 {
		var n int64
		ok(t, e.replica.Raw("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").Scan(&n))
		return n
	}
	// Without the refusal, pg_advisory_lock would wait for the lock a
	// replica session took a moment before: bound it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sql := range []string{
		"SELECT pg_try_advisory_lock(4242)",
		"SELECT pg_advisory_lock(4242)",
		"SELECT pg_try_advisory_lock_shared(4242)",
		"SELECT pg_advisory_unlock(4242)",
		"SELECT pg_advisory_unlock_all()",
	} {
		var got []map[string]any
		if err := e.replica.WithContext(ctx).Raw(sql).Scan(&got).Error; !errors.Is(err, flypg.ErrAdvisoryLock) {
			t.Errorf("Raw(%q) outside a transaction: %v; want ErrAdvisoryLock", sql, err)
		}
		if err := e.replica.WithContext(ctx).Exec(sql).Error; !errors.Is(err, flypg.ErrAdvisoryLock) {
			t.Errorf("Exec(%q) outside a transaction: %v; want ErrAdvisoryLock", sql, err)
		}
	}
	if held(4242) || localLocks() != 0 {
		t.Fatal("a refused lock was taken")
	}
	// Inside a forwarded transaction the lock is the primary's: the
	// primary region cannot take it meanwhile.
	err := e.replica.Transaction(func(tx *gorm.DB) error {
		var got bool
		if err := tx.Raw("SELECT pg_try_advisory_xact_lock(4242)").Scan(&got).Error; err != nil || !got {
			t.Errorf("xact lock in a transaction: %v, %v", got, err)
		}
		var other bool
		ok(t, e.plain.Raw("SELECT pg_try_advisory_lock(4242)").Scan(&other))
		if other {
			t.Error("the primary region took the lock the transaction holds")
		}
		// A session-level lock inside a transaction runs there too.
		return tx.Exec("SELECT pg_advisory_lock(77), pg_advisory_unlock(77)").Error
	})
	noErr(t, err)
	if held(4242) {
		t.Error("the transaction's lock outlived it")
	}
	// Outside a transaction a transaction-level lock is taken and
	// released by the statement on the primary, as in plain GORM.
	var got bool
	ok(t, e.replica.Raw("SELECT pg_try_advisory_xact_lock(4243)").Scan(&got))
	if !got || localLocks() != 0 {
		t.Errorf("xact lock outside a transaction: %v, %d local locks", got, localLocks())
	}
	// A read-only transaction runs on the replica: no lock there.
	err = e.replica.Transaction(func(tx *gorm.DB) error {
		return tx.Raw("SELECT pg_try_advisory_xact_lock(4244)").Scan(&got).Error
	}, &sql.TxOptions{ReadOnly: true})
	if !errors.Is(err, flypg.ErrAdvisoryLock) {
		t.Errorf("lock in a read-only transaction: %v; want ErrAdvisoryLock", err)
	}
	// Under fly.Local the application asked for the local database.
	local := e.replica.WithContext(fly.Local(context.Background()))
	ok(t, local.Raw("SELECT pg_try_advisory_lock(4245)").Scan(&got))
	ok(t, local.Exec("SELECT pg_advisory_unlock_all()"))
}

// TestConnectionBlocks: a db.Connection block runs as on one connection of
// plain GORM: reads run on the local replica until a statement sets session
// state or a transaction begins; from then on, until the block returns,
// everything runs on one pinned primary connection, which sees that state
// and which no other caller does. When the block returns, the connection is
// released with its state: its session advisory locks are free again.
func TestConnectionBlocks(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	ok(t, e.replica.Create(&Widget{Name: "seen"}))
	held := func(key int) bool { // by any session of the primary
		var n int64
		ok(t, e.plain.Raw("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = ?", key).Scan(&n))
		return n > 0
	}
	noErr(t, e.replica.Connection(func(c *gorm.DB) error {
		// Each statement on a session of its own: a chain on c itself
		// would keep its model and conditions for the next, in plain
		// GORM too.
		q := func() *gorm.DB { return c.Session(&gorm.Session{NewDB: true}) }
		var w Widget
		if err := q().Where("name = ?", "seen").First(&w).Error; err != nil {
			return err
		}
		var recovery bool
		if err := q().Raw("SELECT pg_is_in_recovery()").Scan(&recovery).Error; err != nil || !recovery {
			t.Errorf("a read before any session state left the replica (%v)", err)
		}
		for _, sql := range []string{
			"SET application_name = 'block'",
			"CREATE TEMP TABLE scratch (id int)",
			"INSERT INTO scratch VALUES (1)",
			"SELECT pg_advisory_lock(4711)",
		} {
			if err := q().Exec(sql).Error; err != nil {
				return fmt.Errorf("%s: %w", sql, err)
			}
		}
		var app string
		if err := q().Raw("SHOW application_name").Scan(&app).Error; err != nil || app != "block" {
			t.Errorf("SHOW after SET in the block: %q (%v)", app, err)
		}
		if err := q().Create(&Widget{Name: "in-block"}).Error; err != nil {
			return err
		}
		var w2 Widget
		if err := q().Clauses(clause.Locking{Strength: "UPDATE"}).Where("name = ?", "in-block").First(&w2).Error; err != nil {
			return fmt.Errorf("FOR UPDATE: %w", err)
		}
		err := q().Transaction(func(tx *gorm.DB) error {
			if err := tx.Exec("INSERT INTO scratch VALUES (2)").Error; err != nil {
				return err
			}
			return tx.Create(&Widget{Name: "tx-in-block"}).Error
		})
		if err != nil {
			return fmt.Errorf("transaction in the block: %w", err)
		}
		var n int64
		if err := q().Raw("SELECT count(*) FROM scratch").Scan(&n).Error; err != nil || n != 2 {
			t.Errorf("the temporary table holds %d rows (%v), want 2", n, err)
		}
		if !held(4711) {
			t.Error("the block's session lock is not held on the primary")
		}
		var other bool
		ok(t, e.plain.Raw("SELECT pg_try_advisory_lock(4711)").Scan(&other))
		if other {
			t.Error("the primary region took the lock the block holds")
		}
		return nil
	}))
	testkit.Eventually(t, 30*time.Second, func() bool { return !held(4711) }, "the block's lock to be released with its connection")
	if n := countRows(t, e.plain, "widgets", "name IN ('in-block', 'tx-in-block')"); n != 2 {
		t.Errorf("%d of the block's 2 widgets on the primary", n)
	}
	// The block waited for its writes: the replica reads them right after.
	if n := countRows(t, e.replica, "widgets", "name IN ('in-block', 'tx-in-block')"); n != 2 {
		t.Errorf("the replica reads %d of the block's 2 widgets right after it", n)
	}
	// The next block starts without the state of the last.
	err := e.replica.Connection(func(c *gorm.DB) error {
		if err := c.Exec("SET application_name = 'next'").Error; err != nil {
			return err
		}
		return c.Exec("SELECT * FROM scratch").Error
	})
	if err == nil {
		t.Error("a later block sees the temporary table of an earlier one")
	}
}

// TestMigratorInTransaction: GORM's postgres migrator passes
// pgx.QueryExecModeSimpleProtocol in front of its arguments; inside a
// forwarded transaction the forwarding driver treats it as pgx's stdlib
// does, so ColumnTypes and AutoMigrate work there.
func TestMigratorInTransaction(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	err := e.replica.Transaction(func(tx *gorm.DB) error {
		cols, err := tx.Migrator().ColumnTypes(&Widget{})
		if err != nil {
			return err
		}
		if len(cols) != 3 {
			t.Errorf("ColumnTypes in a transaction: %d columns, want 3", len(cols))
		}
		if err := tx.AutoMigrate(&Gadget{}); err != nil {
			return err
		}
		return tx.AutoMigrate(&Widget{}) // existing table: reads its columns
	})
	noErr(t, err)
	if !e.plain.Migrator().HasTable(&Gadget{}) {
		t.Fatal("the table AutoMigrate created in the transaction is not on the primary")
	}
}

// TestPrepareStmtSessionTransaction: a PrepareStmt session prepares a
// query outside a transaction (on the local replica) and uses it again
// inside s.Transaction, forwarded to the primary — with the session on
// its own and with PrepareStmt in the GORM configuration too.
func TestPrepareStmtSessionTransaction(t *testing.T) {
	t.Parallel()
	for _, cfg := range []struct {
		name string
		opts func(*gorm.Config)
	}{{"session", nil}, {"config and session", func(c *gorm.Config) { c.PrepareStmt = true }}} {
		t.Run(cfg.name, func(t *testing.T) {
			e := newEnvWith(t, envConfig{models: []any{&Widget{}}, gorm: cfg.opts})
			ok(t, e.replica.Create(&Widget{Name: "w", Count: 1}))
			s := e.replica.Session(&gorm.Session{PrepareStmt: true})
			var w Widget
			ok(t, s.Where("name = ?", "w").First(&w))
			err := s.Transaction(func(tx *gorm.DB) error {
				var again Widget
				if err := tx.Where("name = ?", "w").First(&again).Error; err != nil {
					return err
				}
				if !inRecovery(t, tx) && again.ID == w.ID {
					return tx.Model(&again).Update("count", again.Count+1).Error
				}
				return errors.New("the transaction does not run on the primary")
			})
			noErr(t, err)
			ok(t, s.Where("name = ?", "w").First(&w))
			if w.Count != 2 {
				t.Fatalf("count %d after the transaction, want 2", w.Count)
			}
		})
	}
}

// TestReadOnlySerializable: a read-only transaction at the serializable
// level, which a hot standby refuses, runs on the primary; other read-only
// transactions stay on the replica.
func TestReadOnlySerializable(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	ok(t, e.replica.Create(&Widget{Name: "w"}))
	where := func(opts *sql.TxOptions) (recovery bool, n int64, err error) {
		err = e.replica.Transaction(func(tx *gorm.DB) error {
			recovery = inRecovery(t, tx)
			return tx.Model(&Widget{}).Count(&n).Error
		}, opts)
		return
	}
	rec, n, err := where(&sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable})
	if err != nil || rec || n != 1 {
		t.Fatalf("serializable read-only: in recovery %v, %d widgets, %v; want the primary", rec, n, err)
	}
	rec, n, err = where(&sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil || !rec || n != 1 {
		t.Fatalf("repeatable-read read-only: in recovery %v, %d widgets, %v; want the replica", rec, n, err)
	}
	// A write in it is refused as on the primary (25006).
	err = e.replica.Transaction(func(tx *gorm.DB) error {
		return tx.Create(&Widget{Name: "no"}).Error
	}, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable})
	if sqlState(err) != "25006" {
		t.Fatalf("write in a serializable read-only transaction: %v; want 25006", err)
	}
}

// TestWritingFunctionsRunOnPrimary: built-in functions that write or that a
// hot standby refuses run on the primary without an override, and so does
// every Exec, even of a SELECT; the write is awaited.
func TestWritingFunctionsRunOnPrimary(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	ok(t, e.plain.Exec("CREATE SEQUENCE tickets"))
	e.waitReplicated()
	next := func(db *gorm.DB) int64 {
		var n int64
		ok(t, db.Raw("SELECT nextval('tickets')").Scan(&n))
		return n
	}
	if a, b := next(e.replica), next(e.replica); a != 1 || b != 2 {
		t.Fatalf("nextval through the plugin: %d, %d", a, b)
	}
	ok(t, e.replica.Exec("SELECT setval('tickets', 41)"))
	var last int64
	ok(t, e.replica.Raw("SELECT last_value FROM tickets").Scan(&last)) // a read: local
	if last != 41 {
		t.Fatalf("the replica reads last_value %d right after setval, want 41", last)
	}
	var n int64
	ok(t, e.replica.Table("widgets").Select("nextval('tickets')").Limit(1).Scan(&n))
	rpcs, waits := e.counted(func() { ok(t, e.replica.Exec("SELECT pg_notify('events', 'x')")) })
	if rpcs != 1 || waits != 1 {
		t.Errorf("Exec of pg_notify: %d round trips, %d waits; want 1 and 1", rpcs, waits)
	}
	rpcs, _ = e.counted(func() { ok(t, e.replica.Exec("SELECT 1")) })
	if rpcs != 1 {
		t.Errorf("Exec of a SELECT: %d round trips, want 1 (an Exec is not used to read)", rpcs)
	}
	var xid int64
	ok(t, e.replica.Raw("SELECT txid_current()").Scan(&xid))
	if xid == 0 {
		t.Error("txid_current returned 0")
	}
	rpcs, _ = e.counted(func() { ok(t, e.replica.Raw("SELECT count(*) FROM widgets").Scan(&n)) })
	if rpcs != 0 {
		t.Errorf("a plain read took %d round trips", rpcs)
	}
}

// TestPluginDB: the plugin's *sql.DB routes like GORM: a write through it
// is forwarded and awaited, the read after it runs on the replica and sees
// it; transactions are forwarded, read-only ones stay local; session
// locks are refused.
func TestPluginDB(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}})
	db, err := e.rPlug.DB()
	noErr(t, err)
	ctx := context.Background()
	res, err := db.ExecContext(ctx, "INSERT INTO widgets (name, count) VALUES ($1, $2)", "sqldb", 3)
	noErr(t, err)
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("RowsAffected %d", n)
	}
	var count int
	var recovery bool
	noErr(t, db.QueryRowContext(ctx, "SELECT count, pg_is_in_recovery() FROM widgets WHERE name = $1", "sqldb").Scan(&count, &recovery))
	if count != 3 || !recovery {
		t.Fatalf("read after the write: count %d, on the replica %v", count, recovery)
	}
	var id int64
	noErr(t, db.QueryRowContext(ctx, "INSERT INTO widgets (name) VALUES ($1) RETURNING id", "returning").Scan(&id))
	noErr(t, db.QueryRowContext(ctx, "SELECT count(*) FROM widgets WHERE id = $1", id).Scan(&count))
	if count != 1 {
		t.Fatal("the row inserted by a query is not read back")
	}

	tx, err := db.BeginTx(ctx, nil)
	noErr(t, err)
	_, err = tx.ExecContext(ctx, "UPDATE widgets SET count = count + 1 WHERE name = $1", "sqldb")
	noErr(t, err)
	noErr(t, tx.QueryRowContext(ctx, "SELECT count, pg_is_in_recovery() FROM widgets WHERE name = $1", "sqldb").Scan(&count, &recovery))
	if count != 4 || recovery {
		t.Fatalf("read in the transaction: count %d, in recovery %v", count, recovery)
	}
	noErr(t, tx.Commit())
	noErr(t, db.QueryRowContext(ctx, "SELECT count FROM widgets WHERE name = $1", "sqldb").Scan(&count))
	if count != 4 {
		t.Fatalf("after commit the replica reads count %d", count)
	}

	ro, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	noErr(t, err)
	noErr(t, ro.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery))
	if !recovery {
		t.Error("a read-only transaction left the replica")
	}
	if _, err := ro.ExecContext(ctx, "SELECT pg_advisory_xact_lock(1)"); !errors.Is(err, flypg.ErrAdvisoryLock) {
		t.Errorf("lock in a read-only transaction: %v", err)
	}
	noErr(t, ro.Rollback())
	// A session lock outside a transaction runs on a pinned primary
	// connection, released (and the lock with it) as the statement's
	// connection goes back to the pool.
	if _, err := db.ExecContext(ctx, "SELECT pg_advisory_lock(1)"); err != nil {
		t.Errorf("session lock outside a transaction: %v", err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		var n int64
		ok(t, e.plain.Raw("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 1").Scan(&n))
		return n == 0
	}, "the session lock to be released with its connection")
	var next int64
	noErr(t, db.QueryRowContext(ctx, "SELECT count(*) FROM widgets WHERE name = ANY($1)", []string{"sqldb", "returning"}).Scan(&next))
	if next != 2 {
		t.Errorf("array argument: %d", next)
	}
	// In the primary region it is the local database.
	pdb, err := e.pPlug.DB()
	noErr(t, err)
	noErr(t, pdb.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery))
	if recovery {
		t.Error("the primary region's DB is not the primary")
	}
}
