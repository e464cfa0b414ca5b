package flypg

import "github.com/flypg/flypg/callbacks"

// Per-statement routing overrides, in the style of gorm.io/plugin/dbresolver:
//
//	db.Clauses(flypg.UsePrimary).Raw("SELECT my_counter_next()").Scan(&n)
//	db.Clauses(flypg.UseLocal).Exec("SET LOCAL statement_timeout = 100")
const (
	// UsePrimary runs the statement on the primary: raw SQL with side
	// effects flypg cannot see in its text (a function of your own that
	// writes), which then waits for replication like any write, or a query
	// built by GORM that must see the latest data without waiting for the
	// replica. Built-in writing functions (nextval, setval, pg_notify, ...)
	// need no override.
	UsePrimary = callbacks.RoutePrimary
	// UseLocal runs the statement on the local database whatever it is.
	UseLocal = callbacks.RouteLocal
)
