package callbacks

import (
	"database/sql"
	"reflect"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// returningScanSafe reports whether GORM's scan of the statement's RETURNING
// values into the model cannot fail, whatever the values. GORM scans them
// after the statement; plain GORM rolls its implicit transaction back when
// the scan fails (a text default declared for an int field, say), so COMMIT
// may travel with the statement only when no such failure is possible.
//
// The decision rests on the model's declared column types — GORM's own
// when a field has no type tag, which is what AutoMigrate creates. A table
// whose real column types differ from the model's declaration can still
// fail the scan after COMMIT; the await callback then reports the write as
// committed (CommittedError), never as failed.
func returningScanSafe(op string, stmt *gorm.Statement) bool {
	cols, all, returning := returningColumns(op, stmt)
	if !returning {
		return true
	}
	s := stmt.Schema
	if s == nil || !destMatchesSchema(stmt) {
		return false
	}
	if all {
		for _, f := range s.Fields {
			if f.DBName != "" && f.Readable && !fieldScanSafe(f) {
				return false
			}
		}
		return true
	}
	for _, name := range cols {
		f := s.LookUpField(name)
		if f == nil || !f.Readable {
			// GORM discards a column the model lacks, except when it is
			// the only one: it then scans it into the whole struct.
			if len(cols) == 1 {
				return false
			}
			continue
		}
		if !fieldScanSafe(f) {
			return false
		}
	}
	return true
}

// returningColumns returns the columns GORM's statement callback will ask
// back with RETURNING (all: RETURNING *), and whether it asks any.
func returningColumns(op string, stmt *gorm.Statement) (cols []string, all, returning bool) {
	if c, ok := stmt.Clauses["RETURNING"]; ok {
		r, ok := c.Expression.(clause.Returning)
		if !ok {
			return nil, true, true // an expression of its own: assume everything
		}
		if len(r.Columns) == 0 {
			return nil, true, true
		}
		for _, col := range r.Columns {
			if col.Raw || col.Name == "*" {
				return nil, true, true
			}
			cols = append(cols, col.Name)
		}
		return cols, false, true
	}
	if op != "create" || stmt.Schema == nil {
		return nil, false, false
	}
	// Postgres Create returns the fields the database fills in.
	for _, f := range stmt.Schema.FieldsWithDefaultDBValue {
		if f.Readable {
			cols = append(cols, f.DBName)
		}
	}
	return cols, false, len(cols) > 0
}

// destMatchesSchema reports whether GORM scans into the statement's own
// model type (a struct, a slice of them, or a map), as opposed to another
// type it would parse on the fly.
func destMatchesSchema(stmt *gorm.Statement) bool {
	switch stmt.Dest.(type) {
	case map[string]any, *map[string]any, []map[string]any, *[]map[string]any:
		return true
	}
	if !stmt.ReflectValue.IsValid() {
		return false
	}
	t := stmt.ReflectValue.Type()
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t == stmt.Schema.ModelType
}

var (
	scannerType = reflect.TypeOf((*sql.Scanner)(nil)).Elem()
	timeType    = reflect.TypeOf(time.Time{})
)

// fieldScanSafe reports whether database/sql can scan any value of the
// field's declared column type into the field's Go type (as pgx's stdlib
// decodes it: integers as int64, numeric and text as string, timestamps as
// time.Time). Custom scanners and serializers may refuse any value, so they
// are never safe.
func fieldScanSafe(f *schema.Field) bool {
	if f.Serializer != nil {
		return false
	}
	t := f.IndirectFieldType
	if reflect.PointerTo(t).Implements(scannerType) {
		return false
	}
	declared := declaredType(f)
	switch {
	case t.Kind() == reflect.String:
		return true // every value converts to a string
	case t == timeType:
		// 'infinity' decodes as a string, which no time.Time accepts.
		if strings.Contains(strings.ToLower(f.DefaultValue), "infinity") {
			return false
		}
		return declared == "" || oneOf(declared, "timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone", "date")
	case t.Kind() == reflect.Bool:
		return declared == "" || oneOf(declared, "bool", "boolean")
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return declared == "" || oneOf(declared, "bytea", "text", "varchar", "character varying", "char", "character", "json", "jsonb", "uuid")
	case t.Kind() == reflect.Float64:
		// GORM declares decimal; its text always parses as a float64.
		return declared == "" || oneOf(declared, "real", "float4", "double precision", "float8", "float", "decimal", "numeric", "smallint", "int2", "integer", "int", "int4", "bigint", "int8")
	case t.Kind() == reflect.Float32:
		return oneOf(declared, "real", "float4", "smallint", "int2")
	}
	bits, integer := intBits(t)
	if !integer {
		return false
	}
	unsigned := isUnsigned(t)
	if unsigned && strings.HasPrefix(strings.TrimSpace(f.DefaultValue), "-") {
		return false
	}
	if declared == "" {
		// GORM sizes the column from the Go type, one bit wider for
		// unsigned types: only a 64-bit one is then wide enough.
		if unsigned {
			return bits == 64
		}
		return bits >= 16
	}
	switch {
	case oneOf(declared, "smallint", "int2", "smallserial", "serial2"):
		return bits >= 16
	case oneOf(declared, "integer", "int", "int4", "serial", "serial4"):
		return bits >= 32
	case oneOf(declared, "bigint", "int8", "bigserial", "serial8"):
		return bits >= 64
	}
	return false
}

// declaredType is the field's declared column type, lower case, without a
// length or precision; "" when GORM derives the column type from the Go type
// (no type tag, or a generic one such as "int").
func declaredType(f *schema.Field) string {
	switch f.DataType {
	case schema.Bool, schema.Int, schema.Uint, schema.Float, schema.String, schema.Time, schema.Bytes:
		return ""
	}
	d := strings.ToLower(string(f.DataType))
	if open := strings.IndexByte(d, '('); open >= 0 {
		if end := strings.IndexByte(d[open:], ')'); end >= 0 {
			d = d[:open] + " " + d[open+end+1:]
		}
	}
	d = strings.Join(strings.Fields(d), " ")
	if strings.HasSuffix(d, "[]") || strings.HasSuffix(d, " array") {
		return "array"
	}
	return d
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

func intBits(t reflect.Type) (int, bool) {
	switch t.Kind() {
	case reflect.Int8, reflect.Uint8:
		return 8, true
	case reflect.Int16, reflect.Uint16:
		return 16, true
	case reflect.Int32, reflect.Uint32:
		return 32, true
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return 64, true
	}
	return 0, false
}

func isUnsigned(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}
