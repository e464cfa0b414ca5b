package forward

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session state never crosses units. A unit runs on a pooled primary
// connection that then serves other callers, so whatever session state it
// creates there — settings (SET, set_config(..., false)), temporary
// tables, prepared statements, LISTEN, session advisory locks, held
// cursors, loaded libraries — must die with it. The rule:
//
//   - Each statement is classified by its text (classifySQL), once per
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

// taint is what a unit may have left on its connection.
type taint uint8

const (
	taintNone  taint = iota // no session state
	taintMaybe              // calls functions: check the state after the unit
	taintSure               // can create session state: close the connection after the unit
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

// resetsStatements reports whether sql may deallocate prepared statements
// of its connection (DEALLOCATE, DISCARD): the connection's statement
// caches must then be dropped before its next statement.
func resetsStatements(sql string) bool {
	reset := false
	scanSQL(sql, func(stmt []token) {
		if len(stmt) > 0 && (stmt[0].is("deallocate") || stmt[0].is("discard")) {
			reset = true
		}
	})
	return reset
}

// classifySQL tells what session state sql may leave on its connection.
func classifySQL(sql string) taint {
	worst := taintNone
	scanSQL(sql, func(stmt []token) {
		worst = max(worst, classifyStatement(stmt))
	})
	return worst
}

func classifyStatement(stmt []token) taint {
	if len(stmt) == 0 {
		return taintNone
	}
	first := stmt[0]
	switch {
	case first.is("set"):
		if len(stmt) > 1 && (stmt[1].is("local") || stmt[1].is("transaction") || stmt[1].is("constraints")) {
			break
		}
		return taintSure
	case first.keyword() && sessionCommands[first.name()]:
		return taintSure
	}
	t := taintNone
	if first.is("call") {
		t = taintMaybe
	}
	for i, tk := range stmt {
		if !tk.word {
			continue
		}
		w := tk.name()
		if tk.keyword() && (w == "temp" || w == "temporary") || strings.HasPrefix(w, "pg_temp") {
			return taintSure
		}
		if i+1 < len(stmt) && stmt[i+1].is("(") {
			switch {
			case sessionFunctions[w]:
				return taintSure
			case !harmlessFunctions[w] && isCall(stmt, i):
				t = taintMaybe
			}
		}
	}
	return t
}

// isCall reports whether the word at i, followed by "(", calls a function
// rather than naming a relation with its column list, a CTE, or being a
// keyword or type name that takes parentheses.
func isCall(stmt []token, i int) bool {
	if stmt[i].keyword() && notCalls[stmt[i].name()] {
		return false
	}
	// The start of a qualified name: schema.name(...).
	j := i
	for j >= 2 && stmt[j-1].is(".") && stmt[j-2].word {
		j -= 2
	}
	if j == 0 {
		return true
	}
	prev := stmt[j-1]
	if prev.keyword() && beforeRelation[prev.name()] {
		return false
	}
	// WITH a AS (...), b (x, y) AS (...): a CTE with its columns.
	return !(prev.is(",") && closesThenAs(stmt, i+1))
}

// closesThenAs reports whether the parenthesis at i closes and is followed
// by AS.
func closesThenAs(stmt []token, i int) bool {
	depth := 0
	for k := i; k < len(stmt); k++ {
		switch {
		case stmt[k].is("("):
			depth++
		case stmt[k].is(")"):
			depth--
			if depth == 0 {
				return k+1 < len(stmt) && stmt[k+1].is("as")
			}
		}
	}
	return false
}

func wordSet(list string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(list) {
		m[w] = true
	}
	return m
}

// sessionCommands create session state by themselves.
var sessionCommands = wordSet("reset discard prepare deallocate listen unlisten load declare do")

// sessionFunctions create (or drop) session state.
var sessionFunctions = wordSet(`set_config pg_advisory_lock pg_advisory_lock_shared
	pg_try_advisory_lock pg_try_advisory_lock_shared pg_advisory_unlock
	pg_advisory_unlock_shared pg_advisory_unlock_all dblink_connect dblink_connect_u`)

// beforeRelation are keywords after which a name with parentheses is a
// relation with its column list, or a CTE, not a call.
var beforeRelation = wordSet("into table references on only exists view index with recursive type update of")

// notCalls are keywords and type names that take parentheses.
var notCalls = wordSet(`values in exists any all some array row cast using filter over within as on
	conflict key unique check primary foreign default set not and or select from where returning
	distinct group by having order partition join lateral case when then else except intersect
	union limit offset tablesample grouping cube rollup sets include constraint collate like ilike
	similar between is nulls window rows range groups fetch escape
	varchar char character varying numeric decimal bit time timestamp interval float double
	precision int integer smallint bigint text bool boolean real`)

// harmlessFunctions are built-in functions without session effects, those
// of the statements GORM generates and of everyday SQL.
var harmlessFunctions = wordSet(`now current_timestamp current_date current_time localtime
	localtimestamp clock_timestamp statement_timestamp transaction_timestamp timeofday
	count sum avg min max every bool_and bool_or array_agg string_agg json_agg jsonb_agg
	json_object_agg jsonb_object_agg stddev variance
	lower upper length char_length character_length octet_length bit_length
	coalesce nullif greatest least abs round floor ceil ceiling trunc mod power sqrt exp ln log
	sign random gen_random_uuid uuid_generate_v4 nextval currval lastval setval
	concat concat_ws substr substring replace trim btrim ltrim rtrim lpad rpad split_part position
	strpos left right reverse repeat md5 sha256 encode decode format initcap translate
	regexp_replace regexp_match regexp_matches regexp_split_to_array starts_with
	to_char to_date to_timestamp to_number date_trunc date_part extract age make_interval
	make_date make_time make_timestamp make_timestamptz timezone date_bin
	json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb
	jsonb_set jsonb_insert jsonb_strip_nulls json_extract_path jsonb_extract_path
	json_extract_path_text jsonb_extract_path_text jsonb_array_length json_array_length
	jsonb_typeof json_typeof jsonb_path_query jsonb_path_exists row_to_json
	array_length array_append array_prepend array_cat array_remove array_replace array_position
	array_positions array_to_string string_to_array cardinality unnest generate_series
	row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
	to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
	quote_ident quote_literal quote_nullable current_setting pg_current_wal_insert_lsn
	pg_current_wal_lsn pg_current_wal_flush_lsn txid_current pg_current_xact_id
	pg_backend_pid pg_sleep pg_sleep_for pg_sleep_until pg_try_advisory_xact_lock
	pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_xact_lock_shared
	version current_database current_schema current_user session_user pg_is_in_recovery
	pg_last_wal_replay_lsn pg_column_size pg_typeof`)
