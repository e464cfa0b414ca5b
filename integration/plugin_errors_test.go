package integration

import (
	"errors"
	"testing"

	"gorm.io/gorm"
)

// TestTranslateError: with TranslateError the replica-region handle turns
// PostgreSQL's constraint errors from the primary into GORM's sentinels,
// exactly as plain GORM does, with the *pgconn.PgError still reachable,
// whether the statement ran alone, in a transaction or as raw SQL; nothing
// of the failed call is written.
func TestTranslateError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Seed through the plugin.
	owner := User{Name: "owner", Email: "owner@example.com", Orders: []Order{{Number: 1}}}
	ok(t, e.replica.Create(&owner))
	ok(t, e.replica.Create(&User{Name: "other", Email: "other@example.com"}))
	ok(t, e.replica.Create(&Widget{Name: "taken"}))
	ok(t, e.replica.Create(&Account{Owner: "acct", Balance: 5}))

	for _, tc := range []struct {
		name  string
		run   func(db *gorm.DB) error
		want  error
		state string
	}{
		{"duplicate key on Create", func(db *gorm.DB) error {
			return db.Create(&Widget{Name: "taken"}).Error
		}, gorm.ErrDuplicatedKey, "23505"},
		{"duplicate key on Updates", func(db *gorm.DB) error {
			return db.Model(&User{}).Where("email = ?", "other@example.com").Update("email", "owner@example.com").Error
		}, gorm.ErrDuplicatedKey, "23505"},
		{"duplicate key in a Transaction", func(db *gorm.DB) error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&Widget{Name: "fresh"}).Error; err != nil {
					return err
				}
				return tx.Create(&Widget{Name: "taken"}).Error
			})
		}, gorm.ErrDuplicatedKey, "23505"},
		{"duplicate key in raw Exec", func(db *gorm.DB) error {
			return db.Exec("INSERT INTO widgets (name) VALUES (?)", "taken").Error
		}, gorm.ErrDuplicatedKey, "23505"},
		{"duplicate key in an upsert without a matching conflict target", func(db *gorm.DB) error {
			return db.Exec("INSERT INTO users (name, email) VALUES ('x', 'owner@example.com') ON CONFLICT (id) DO NOTHING").Error
		}, gorm.ErrDuplicatedKey, "23505"},
		{"foreign key on Create", func(db *gorm.DB) error {
			return db.Create(&Profile{UserID: 999999, Bio: "orphan"}).Error
		}, gorm.ErrForeignKeyViolated, "23503"},
		{"foreign key on a Delete that would orphan rows", func(db *gorm.DB) error {
			return db.Unscoped().Delete(&User{}, owner.ID).Error
		}, gorm.ErrForeignKeyViolated, "23503"},
		{"foreign key in a raw Exec", func(db *gorm.DB) error {
			return db.Exec("INSERT INTO orders (user_id, number) VALUES (?, ?)", 999999, 77).Error
		}, gorm.ErrForeignKeyViolated, "23503"},
		{"check constraint", func(db *gorm.DB) error {
			return db.Model(&Account{}).Where("owner = ?", "acct").Update("balance", -1).Error
		}, gorm.ErrCheckConstraintViolated, "23514"},
	} {
		for _, h := range []struct {
			name string
			db   *gorm.DB
		}{{"replica region", e.replica}, {"plain GORM", e.plain}} {
			err := tc.run(h.db)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s, %s: %v, want %v", tc.name, h.name, err, tc.want)
			}
			if got := sqlState(err); got != tc.state {
				t.Errorf("%s, %s: SQLSTATE %q, want %s", tc.name, h.name, got, tc.state)
			}
		}
	}
	// Nothing of the failed calls was written, and the replica agrees.
	for _, db := range []*gorm.DB{e.replica, e.plain} {
		if n := countRows(t, db, "widgets", ""); n != 1 {
			t.Errorf("%d widgets, want 1", n)
		}
		if n := countRows(t, db, "users", ""); n != 2 {
			t.Errorf("%d users, want 2", n)
		}
		if n := countRows(t, db, "profiles", ""); n != 0 {
			t.Errorf("%d profiles, want 0", n)
		}
	}
	var acct Account
	ok(t, e.replica.Where("owner = ?", "acct").First(&acct))
	if acct.Balance != 5 {
		t.Errorf("balance %d after a failed update", acct.Balance)
	}
	// The handle works after the errors.
	ok(t, e.replica.Create(&Widget{Name: "after errors"}))
	wantWidgets(t, e.replica, "after errors", "taken")
}
