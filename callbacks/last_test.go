package callbacks

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
)

// offlineDB is a postgres *gorm.DB that never connects: enough to inspect
// callback chains and parse models.
func offlineDB(t *testing.T) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(postgres.New(postgres.Config{DSN: "host=/nonexistent"}), &gorm.Config{DisableAutomaticPing: true, Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// registerOurs installs flypg's own callbacks the way Register does, with
// no-op bodies: their position is what matters here.
func registerOurs(t *testing.T, db *gorm.DB) {
	t.Helper()
	r := &Router{}
	cb := db.Callback()
	for _, err := range []error{
		cb.Create().Before("*").Register("flypg:route", r.route("create")),
		cb.Create().Before("gorm:create").Register("flypg:last_statement", r.markLast("create")),
		cb.Create().Before("gorm:commit_or_rollback_transaction").Register("flypg:outcome", recordOutcome),
		cb.Create().After("*").Register("flypg:await", r.await),
		cb.Update().Before("gorm:commit_or_rollback_transaction").Register("flypg:outcome", recordOutcome),
		cb.Delete().Before("gorm:commit_or_rollback_transaction").Register("flypg:outcome", recordOutcome),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func appCallback(*gorm.DB) {}

// TestChainInspection: COMMIT may travel with the statement only when every
// callback between GORM's statement and its commit is one flypg knows.
func TestChainInspection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*gorm.DB) error
		op    string
		want  chainInfo
	}{
		{"GORM's own create chain", nil, "create", chainInfo{ok: true, hooks: true, assoc: true}},
		{"GORM's own update chain", nil, "update", chainInfo{ok: true, hooks: true, assoc: true}},
		{"GORM's own delete chain", nil, "delete", chainInfo{ok: true, hooks: true}},
		{"app callback between statement and hooks", func(db *gorm.DB) error {
			return db.Callback().Create().After("gorm:create").Before("gorm:after_create").Register("app:audit", appCallback)
		}, "create", chainInfo{}},
		{"app callback after hooks, before the commit", func(db *gorm.DB) error {
			return db.Callback().Update().After("gorm:after_update").Before("gorm:commit_or_rollback_transaction").Register("app:audit", appCallback)
		}, "update", chainInfo{}},
		{"app callback after the statement only: GORM sorts it after the commit", func(db *gorm.DB) error {
			return db.Callback().Create().After("gorm:create").Register("app:audit", appCallback)
		}, "create", chainInfo{ok: true, hooks: true, assoc: true}},
		{"app callback before the statement", func(db *gorm.DB) error {
			return db.Callback().Create().Before("gorm:create").Register("app:check", appCallback)
		}, "create", chainInfo{ok: true, hooks: true, assoc: true}},
		{"app callback after the commit", func(db *gorm.DB) error {
			return db.Callback().Delete().After("gorm:commit_or_rollback_transaction").Register("app:metrics", appCallback)
		}, "delete", chainInfo{ok: true, hooks: true}},
		{"app callback on another operation", func(db *gorm.DB) error {
			return db.Callback().Update().After("gorm:update").Register("app:audit", appCallback)
		}, "create", chainInfo{ok: true, hooks: true, assoc: true}},
		{"statement callback replaced", func(db *gorm.DB) error {
			return db.Callback().Create().Replace("gorm:create", appCallback)
		}, "create", chainInfo{}},
		{"after-hooks callback replaced", func(db *gorm.DB) error {
			return db.Callback().Create().Replace("gorm:after_create", appCallback)
		}, "create", chainInfo{}},
		{"commit callback replaced", func(db *gorm.DB) error {
			return db.Callback().Create().Replace("gorm:commit_or_rollback_transaction", appCallback)
		}, "create", chainInfo{}},
		{"after-hooks callback removed", func(db *gorm.DB) error {
			return db.Callback().Create().Remove("gorm:after_create")
		}, "create", chainInfo{ok: true, assoc: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := offlineDB(t)
			registerOurs(t, db)
			if tc.setup != nil {
				if err := tc.setup(db); err != nil {
					t.Fatal(err)
				}
			}
			var cache chainCache
			if got := cache.info(db, tc.op); got != tc.want {
				t.Errorf("chain of %s: %+v, want %+v", tc.op, got, tc.want)
			}
		})
	}
}

// TestChainCacheSeesLaterCallbacks: a callback the application registers
// after the chain was inspected is seen at the next statement.
func TestChainCacheSeesLaterCallbacks(t *testing.T) {
	db := offlineDB(t)
	registerOurs(t, db)
	var cache chainCache
	if !cache.info(db, "create").ok {
		t.Fatal("GORM's own chain refused")
	}
	if err := db.Callback().Create().After("gorm:create").Before("gorm:after_create").Register("app:late", appCallback); err != nil {
		t.Fatal(err)
	}
	if cache.info(db, "create").ok {
		t.Fatal("a callback registered later was not seen")
	}
}

type plainRow struct {
	ID   uint
	Name string
}

type textDefault struct {
	ID  uint
	Val int `gorm:"type:text;default:md5('x')"`
}

type typedDefaults struct {
	ID      int64     `gorm:"type:bigserial;primaryKey"`
	Code    string    `gorm:"type:uuid;default:gen_random_uuid()"`
	Seq     int32     `gorm:"type:integer;default:nextval('s')"`
	Small   int16     `gorm:"type:smallint;default:1"`
	At      time.Time `gorm:"default:now()"`
	On      bool      `gorm:"default:true"`
	Amount  float64   `gorm:"type:numeric(12,2);default:0"`
	Payload []byte    `gorm:"type:bytea;default:'\\x00'"`
}

type narrowDefault struct {
	ID  uint
	Seq int16 `gorm:"type:integer;default:nextval('s')"`
}

type scannerDefault struct {
	ID  uint
	Val sql.NullString `gorm:"default:upper('x')"`
}

type infinityDefault struct {
	ID uint
	At time.Time `gorm:"default:'infinity'"`
}

type unsignedDefault struct {
	ID  uint
	Val uint32 `gorm:"default:length('seven')"`
}

func statementFor(t *testing.T, db *gorm.DB, dest any, clauses ...clause.Interface) *gorm.Statement {
	t.Helper()
	stmt := &gorm.Statement{DB: db, Dest: dest, Model: dest, Clauses: map[string]clause.Clause{}, Context: context.Background()}
	if err := stmt.Parse(dest); err != nil {
		t.Fatal(err)
	}
	stmt.ReflectValue = reflect.Indirect(reflect.ValueOf(dest))
	for _, c := range clauses {
		stmt.AddClause(c)
	}
	return stmt
}

// TestReturningScanSafe: the scan of RETURNING values counts as work after
// the statement unless no value can fail it.
func TestReturningScanSafe(t *testing.T) {
	db := offlineDB(t)
	for _, tc := range []struct {
		name    string
		op      string
		dest    any
		clauses []clause.Interface
		want    bool
	}{
		{"serial id", "create", &plainRow{}, nil, true},
		{"slice of rows", "create", &[]plainRow{{}, {}}, nil, true},
		{"text default into an int", "create", &textDefault{}, nil, false},
		{"typed defaults that fit", "create", &typedDefaults{}, nil, true},
		{"integer default into int16", "create", &narrowDefault{}, nil, false},
		{"default into a scanner", "create", &scannerDefault{}, nil, false},
		{"infinity into a time", "create", &infinityDefault{}, nil, false},
		{"derived column wider than uint32", "create", &unsignedDefault{}, nil, false},
		{"update without returning", "update", &textDefault{}, nil, true},
		{"update returning everything", "update", &textDefault{}, []clause.Interface{clause.Returning{}}, false},
		{"update returning a safe column", "update", &textDefault{}, []clause.Interface{clause.Returning{Columns: []clause.Column{{Name: "id"}}}}, true},
		{"delete returning everything", "delete", &plainRow{}, []clause.Interface{clause.Returning{}}, true},
		{"returning a column the model lacks", "delete", &plainRow{}, []clause.Interface{clause.Returning{Columns: []clause.Column{{Name: "other"}}}}, false},
		{"map of a model", "create", &map[string]any{}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := tc.dest
			if _, isMap := dest.(*map[string]any); isMap {
				stmt := statementFor(t, db, &plainRow{})
				stmt.Dest = dest
				if got := returningScanSafe(tc.op, stmt); got != tc.want {
					t.Errorf("returningScanSafe = %v, want %v", got, tc.want)
				}
				return
			}
			stmt := statementFor(t, db, dest, tc.clauses...)
			if got := returningScanSafe(tc.op, stmt); got != tc.want {
				t.Errorf("returningScanSafe = %v, want %v", got, tc.want)
			}
		})
	}
}

// fakeConnector opens connections that prepare anything and run nothing.
type fakeConnector struct{}

func (fakeConnector) Connect(context.Context) (driver.Conn, error) { return fakeConn{}, nil }
func (fakeConnector) Driver() driver.Driver                        { return nil }

type fakeConn struct{}

func (fakeConn) Prepare(string) (driver.Stmt, error) { return fakeStmt{}, nil }
func (fakeConn) Close() error                        { return nil }
func (fakeConn) Begin() (driver.Tx, error)           { return nil, errors.New("no transactions") }

type fakeStmt struct{}

func (fakeStmt) Close() error                               { return nil }
func (fakeStmt) NumInput() int                              { return -1 }
func (fakeStmt) Exec([]driver.Value) (driver.Result, error) { return nil, errors.New("no") }
func (fakeStmt) Query([]driver.Value) (driver.Rows, error)  { return nil, errors.New("no") }

// TestStmtQuery: the SQL of a prepared *sql.Stmt can be read back, so that
// a forwarded transaction can use a statement prepared on the local
// database.
func TestStmtQuery(t *testing.T) {
	db := sql.OpenDB(fakeConnector{})
	defer db.Close()
	const query = "SELECT * FROM widgets WHERE id = $1"
	s, err := db.Prepare(query)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if q, ok := stmtQuery(s); !ok || q != query {
		t.Fatalf("stmtQuery = %q, %v; want %q", q, ok, query)
	}
	if _, ok := stmtQuery(nil); ok {
		t.Fatal("stmtQuery(nil) answered")
	}
}
