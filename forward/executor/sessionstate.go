package executor

import (
	"context"
	"time"

	"github.com/flypg/flypg/forward/internal/sqlscan"
	"github.com/jackc/pgx/v5"
)

// Session state never crosses units. A unit runs on a pooled primary
// connection that then serves other callers, so whatever session state it
// creates there — settings (SET, set_config(..., false)), temporary
// tables, prepared statements, LISTEN, session advisory locks, held
// cursors, loaded libraries — must die with it. The rule:
//
//   - Each statement is classified by its text (sqlscan.Classify), once per
//     connection and statement. A statement that can create session state
//     by itself (SET or RESET other than SET LOCAL / SET TRANSACTION /
//     SET CONSTRAINTS, DISCARD, PREPARE, DEALLOCATE, LISTEN, UNLISTEN,
//     LOAD, DECLARE, DO, anything naming TEMP / TEMPORARY or pg_temp,
//     set_config, the session-level advisory lock functions, dblink
//     connections) taints its connection: the connection is closed after
//     the unit instead of going back to the pool. PostgreSQL then drops
//     everything the session held.
//   - A statement that calls a function flypg does not know to be free of
//     session effects (a user function, a procedure via CALL) may create
//     session state where the text does not show it. After such a unit the
//     connection's state is checked, in the same round trip as the commit
//     LSN (no extra round trip): a setting changed for the session, a
//     temporary schema, an advisory lock, a LISTEN channel, a holdable
//     cursor or an SQL-level prepared statement closes the connection too.
//     A unit that ends without that check (rolled back, failed) closes it
//     unconditionally.
//   - Everything else — the INSERT, UPDATE, DELETE and SELECT that GORM
//     generates, with the usual built-in functions — costs nothing extra.
//
// Not covered: state created by triggers or column defaults of a table the
// unit writes (their functions do not appear in the statement), and
// sequences' currval/lastval (every INSERT into a serial column sets it).

// taint is what a unit may have left on its connection: the statement's
// class (sqlscan.Classify), or what its connection's check found.
type taint = sqlscan.Taint

const (
	taintNone  = sqlscan.TaintNone
	taintMaybe = sqlscan.TaintMaybe
	taintSure  = sqlscan.TaintSure
)

const taintKey = "flypg.forward.taint"

// markTaint records that the unit running on c may have left t.
func markTaint(c *pgx.Conn, t taint) {
	if t == taintNone {
		return
	}
	data := c.PgConn().CustomData()
	if old, _ := data[taintKey].(taint); t > old {
		data[taintKey] = t
	}
}

func taintOf(c *pgx.Conn) taint {
	t, _ := c.PgConn().CustomData()[taintKey].(taint)
	return t
}

// cleared records the state check's answer: nothing was left.
func cleared(c *pgx.Conn) { delete(c.PgConn().CustomData(), taintKey) }

// discardIfTainted closes c when a unit may have left session state on it,
// so that the pool destroys it instead of handing it to the next unit.
func discardIfTainted(c *pgx.Conn) {
	if taintOf(c) == taintNone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

// stateCheckSQL is true when the session holds state a unit left: checked
// after units of taintMaybe, outside their transaction.
const stateCheckSQL = `(pg_my_temp_schema() <> 0
 OR EXISTS (SELECT FROM pg_catalog.pg_settings WHERE source = 'session')
 OR EXISTS (SELECT FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')
 OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels())
 OR EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable)
 OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql))`
