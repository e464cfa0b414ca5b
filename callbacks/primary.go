package callbacks

import (
	"fmt"

	"gorm.io/gorm"
)

// RegisterPrimary installs, in a primary-region *gorm.DB, the one callback
// sessions need there: after each create, update, delete and Exec made
// under a session (WithSession) — and each query or row read whose SQL may
// write (not IsRead) — touch(session) records that the session wrote, so that its marks learn the commit position when asked for (one
// query then, none per write). Without a session in the statement's
// context the callback does nothing: no query, no allocation.
func RegisterPrimary(db *gorm.DB, touch func(*Session)) error {
	after := func(db *gorm.DB) {
		if s := SessionFrom(db.Statement.Context); s != nil {
			touch(s)
		}
	}
	maybeWrite := func(db *gorm.DB) {
		if s := SessionFrom(db.Statement.Context); s != nil && !IsRead(db.Statement.SQL.String()) {
			touch(s)
		}
	}
	cb := db.Callback()
	regs := []struct {
		name string
		err  error
	}{
		{"create", cb.Create().After("*").Register("flypg:session", after)},
		{"update", cb.Update().After("*").Register("flypg:session", after)},
		{"delete", cb.Delete().After("*").Register("flypg:session", after)},
		{"raw", cb.Raw().After("*").Register("flypg:session", after)},
		{"query", cb.Query().After("*").Register("flypg:session", maybeWrite)},
		{"row", cb.Row().After("*").Register("flypg:session", maybeWrite)},
	}
	for _, reg := range regs {
		if reg.err != nil {
			return fmt.Errorf("flypg: register %s session callback: %w", reg.name, reg.err)
		}
	}
	return nil
}
