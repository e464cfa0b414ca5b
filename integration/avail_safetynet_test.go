package integration

import (
	"context"
	"database/sql"
	"log/slog"
	"testing"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
)

// TestSafetyNet: a statement the routing rules leave on the local replica
// (SELECT of a function of the application's that writes) is refused there
// as read-only (25006) and runs once on the primary, with the usual wait:
// through Raw, Row and the database/sql handle, its row is on the primary
// once and read back locally right after. Its shape is logged once at
// warning level, not once per value. Inside a local read-only transaction
// the replica's error stays, and with DisableSafetyNet it is returned.
func TestSafetyNet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	local := e.primary.Session(&gorm.Session{Context: fly.Local(context.Background())})
	ok(t, local.Exec(`CREATE FUNCTION avail_add_tag(n text) RETURNS bigint LANGUAGE sql AS 'INSERT INTO tags (name) VALUES (n) RETURNING id'`))
	e.waitReplicated()
	logs := &logRecords{level: slog.LevelWarn}
	db, plug := e.replicaAppWith(t, func(c *flypg.Config) { c.Logger = slog.New(logs) })

	onPrimary := func(name string) int64 { return countRows(t, e.plain, "tags", "name = ?", name) }
	readBack := func(name string) {
		t.Helper()
		if n := onPrimary(name); n != 1 {
			t.Errorf("tag %q: %d rows on the primary, want 1", name, n)
		}
		if n := countRows(t, db, "tags", "name = ?", name); n != 1 {
			t.Errorf("tag %q: the replica shows %d rows right after the statement, want 1 (the wait)", name, n)
		}
	}

	var id int64
	ok(t, db.Raw("SELECT avail_add_tag('raw')").Scan(&id))
	if id == 0 {
		t.Error("Raw(SELECT avail_add_tag(...)).Scan returned no id")
	}
	readBack("raw")
	ok(t, db.Raw("SELECT avail_add_tag(?)", "raw 2").Scan(&id))
	readBack("raw 2")
	if err := db.Raw("SELECT avail_add_tag('row')").Row().Scan(&id); err != nil {
		t.Errorf("Row(): %v", err)
	}
	readBack("row")
	sqlDB, err := plug.DB()
	noErr(t, err)
	if err := sqlDB.QueryRow("SELECT avail_add_tag('database/sql')").Scan(&id); err != nil {
		t.Errorf("database/sql: %v", err)
	}
	readBack("database/sql")

	if got := plug.Stats().Reads.SafetyNetReruns; got != 4 {
		t.Errorf("%d safety-net reruns, want 4", got)
	}
	if got := logs.containing("safety net"); len(got) != 1 {
		t.Errorf("safety net logged %d times for one statement shape, want once: %q", len(got), got)
	}

	// Inside a read-only transaction on the replica: the replica's error.
	err = db.Transaction(func(tx *gorm.DB) error {
		return tx.Raw("SELECT avail_add_tag('read only')").Scan(&id).Error
	}, &sql.TxOptions{ReadOnly: true})
	if sqlState(err) != "25006" {
		t.Errorf("in a read-only transaction: %v, want SQLSTATE 25006", err)
	}
	if n := onPrimary("read only"); n != 0 {
		t.Errorf("the statement of a read-only transaction reached the primary (%d rows)", n)
	}

	// Turned off: the replica's error.
	off, offPlug := e.replicaAppWith(t, func(c *flypg.Config) { c.DisableSafetyNet = true })
	if err := off.Raw("SELECT avail_add_tag('off')").Scan(&id).Error; sqlState(err) != "25006" {
		t.Errorf("with DisableSafetyNet: %v, want SQLSTATE 25006", err)
	}
	if n := onPrimary("off"); n != 0 {
		t.Errorf("with DisableSafetyNet the statement reached the primary (%d rows)", n)
	}
	if got := offPlug.Stats().Reads.SafetyNetReruns; got != 0 {
		t.Errorf("with DisableSafetyNet: %d reruns", got)
	}
}
