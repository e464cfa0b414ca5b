package callbacks

import (
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// workAfter reports whether GORM may run more statements in the implicit
// transaction after the main one: after-hooks, or associations saved after
// the row (has one, has many, many to many) that are set. Belongs-to
// associations are saved before the row, so they do not count. When in
// doubt it answers true: the statement then takes the ordinary path, with
// a COMMIT of its own.
func workAfter(op string, stmt *gorm.Statement) bool {
	s := stmt.Schema
	if s == nil {
		return false
	}
	if !stmt.SkipHooks {
		switch op {
		case "create":
			if s.AfterCreate || s.AfterSave {
				return true
			}
		case "update":
			if s.AfterUpdate || s.AfterSave {
				return true
			}
		case "delete":
			if s.AfterDelete {
				return true
			}
		}
	}
	if op == "delete" {
		return false // associations are deleted before the row
	}
	rels := &s.Relationships
	if len(rels.HasOne)+len(rels.HasMany)+len(rels.Many2Many) == 0 {
		return false
	}
	selected, restricted := stmt.SelectAndOmitColumns(op == "create", op == "update")
	for _, group := range [][]*schema.Relationship{rels.HasOne, rels.HasMany, rels.Many2Many} {
		for _, rel := range group {
			if v, ok := selected[rel.Name]; (ok && !v) || (!ok && restricted) {
				continue // omitted, as GORM's own association callbacks decide
			}
			if relationSet(stmt, rel) {
				return true
			}
		}
	}
	return false
}

// relationSet reports whether any row of the statement carries a value for
// rel, which GORM would then save after the row.
func relationSet(stmt *gorm.Statement, rel *schema.Relationship) bool {
	rv := stmt.ReflectValue
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		for i := 0; i < rv.Len(); i++ {
			obj := rv.Index(i)
			if reflect.Indirect(obj).Kind() != reflect.Struct {
				return true
			}
			if _, zero := rel.Field.ValueOf(stmt.Context, obj); !zero {
				return true
			}
		}
		return false
	case reflect.Struct:
		_, zero := rel.Field.ValueOf(stmt.Context, rv)
		return !zero
	}
	return true
}
