package integration

import (
	"errors"
	"slices"
	"testing"

	"gorm.io/gorm"
)

func audits(t *testing.T, db *gorm.DB, docID uint) []string {
	t.Helper()
	var actions []string
	ok(t, db.Model(&AuditEntry{}).Where("document_id = ?", docID).Order("id").Pluck("action", &actions))
	return actions
}

func wantRan(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s ran hooks %v, want %v", what, got, want)
	}
}

func wantAudits(t *testing.T, db *gorm.DB, docID uint, want ...string) {
	t.Helper()
	if got := audits(t, db, docID); !slices.Equal(got, want) {
		t.Fatalf("document %d audit rows %v, want %v (read right after the write)", docID, got, want)
	}
}

// scenarioHooks: Before/After Create/Update/Save/Delete hooks run in
// GORM's order; after-hooks write audit rows in the same transaction; a
// hook error (before or after the statement, after the hook wrote) rolls
// back the row and every audit row.
func scenarioHooks(t *testing.T, db *gorm.DB, tr *transcript) {
	d := Document{Title: "draft"}
	ok(t, db.Create(&d))
	wantRan(t, "Create", d.Ran, "BeforeSave", "BeforeCreate", "AfterCreate", "AfterSave")
	wantAudits(t, db, d.ID, "AfterCreate", "AfterSave")
	tr.add("create", d.Ran)

	d.Ran, d.Title, d.Revision = nil, "v1", 1
	ok(t, db.Save(&d))
	wantRan(t, "Save", d.Ran, "BeforeSave", "BeforeUpdate", "AfterUpdate", "AfterSave")
	wantAudits(t, db, d.ID, "AfterCreate", "AfterSave", "AfterUpdate", "AfterSave")
	tr.add("save", d.Ran)

	d.Ran = nil
	ok(t, db.Model(&d).Updates(map[string]any{"revision": 2}))
	wantRan(t, "Updates", d.Ran, "BeforeSave", "BeforeUpdate", "AfterUpdate", "AfterSave")
	var got Document
	ok(t, db.First(&got, d.ID))
	if got.Revision != 2 || got.Title != "v1" {
		t.Fatalf("document after Updates: %+v", got)
	}

	d.Ran = nil
	ok(t, db.Model(&d).UpdateColumn("revision", 3))
	wantRan(t, "UpdateColumn", d.Ran) // no hooks
	wantAudits(t, db, d.ID, "AfterCreate", "AfterSave", "AfterUpdate", "AfterSave", "AfterUpdate", "AfterSave")
	tr.add("audits", audits(t, db, d.ID))

	gone := Document{Title: "to delete"}
	ok(t, db.Create(&gone))
	gone.Ran = nil
	ok(t, db.Delete(&gone))
	wantRan(t, "Delete", gone.Ran, "BeforeDelete", "AfterDelete")
	if n := countRows(t, db, "documents", "id = ?", gone.ID); n != 0 {
		t.Fatal("deleted document still there")
	}
	wantAudits(t, db, gone.ID, "AfterCreate", "AfterSave", "AfterDelete")

	// A failing hook rolls back everything of the call, the audit rows its
	// hooks wrote included.
	for _, hook := range []string{"BeforeSave", "BeforeCreate", "AfterCreate", "AfterSave"} {
		f := Document{Title: "fail in " + hook, FailIn: hook}
		err := db.Create(&f).Error
		if !errors.Is(err, errHookFailed) {
			t.Fatalf("Create failing in %s returned %v", hook, err)
		}
		if n := countRows(t, db, "documents", "title = ?", f.Title); n != 0 {
			t.Fatalf("Create failing in %s left the document", hook)
		}
		if n := countRows(t, db, "audit_entries", "title = ?", f.Title); n != 0 {
			t.Fatalf("Create failing in %s left %d audit rows", hook, n)
		}
		tr.add("failed create "+hook, f.Ran)
	}
	for _, hook := range []string{"BeforeUpdate", "AfterUpdate", "AfterSave"} {
		d.Ran, d.FailIn, d.Title = nil, hook, "must not stick"
		if err := db.Save(&d).Error; !errors.Is(err, errHookFailed) {
			t.Fatalf("Save failing in %s returned %v", hook, err)
		}
		ok(t, db.First(&got, d.ID))
		if got.Title != "v1" {
			t.Fatalf("Save failing in %s left title %q", hook, got.Title)
		}
		if n := countRows(t, db, "audit_entries", "title = ?", "must not stick"); n != 0 {
			t.Fatalf("Save failing in %s left %d audit rows", hook, n)
		}
		tr.add("failed save "+hook, d.Ran)
	}
	d.Ran, d.FailIn, d.Title = nil, "AfterDelete", "v1"
	if err := db.Delete(&d).Error; !errors.Is(err, errHookFailed) {
		t.Fatalf("Delete failing in AfterDelete returned %v", err)
	}
	if n := countRows(t, db, "documents", "id = ?", d.ID); n != 1 {
		t.Fatal("Delete failing in AfterDelete removed the document")
	}
	wantAudits(t, db, d.ID, "AfterCreate", "AfterSave", "AfterUpdate", "AfterSave", "AfterUpdate", "AfterSave")
	tr.add("failed delete", d.Ran)

	// Before-hooks that write: the audit row commits with the row, and
	// rolls back with it when the row's own statement fails.
	ticketAudits := func(action string) int64 {
		return countRows(t, db, "audit_entries", "title = ? AND action = ?", "printer on fire", action)
	}
	tk := Ticket{Subject: "printer on fire"}
	ok(t, db.Create(&tk))
	if ticketAudits("ticket:create") != 1 || countRows(t, db, "tickets", "id = ?", tk.ID) != 1 {
		t.Fatal("ticket or its audit row not read back")
	}
	dup := Ticket{Subject: "printer on fire"}
	if err := db.Create(&dup).Error; !errors.Is(err, gorm.ErrDuplicatedKey) {
		t.Fatalf("duplicate ticket: %v, want ErrDuplicatedKey", err)
	}
	if n := ticketAudits("ticket:create"); n != 1 {
		t.Fatalf("%d create audit rows: the failed create's BeforeCreate row committed", n)
	}
	ok(t, db.Model(&tk).Update("status", "closed"))
	var tkGot Ticket
	ok(t, db.First(&tkGot, tk.ID))
	if tkGot.Status != "closed" || ticketAudits("ticket:update") != 1 {
		t.Fatalf("ticket update: %+v, %d audit rows", tkGot, ticketAudits("ticket:update"))
	}
	ok(t, db.Delete(&tk))
	if countRows(t, db, "tickets", "id = ?", tk.ID) != 0 || ticketAudits("ticket:delete") != 1 {
		t.Fatal("ticket delete or its audit row not read back")
	}
	var actions []string
	ok(t, db.Model(&AuditEntry{}).Where("title = ?", "printer on fire").Order("id").Pluck("action", &actions))
	tr.add("ticket", actions)
}
