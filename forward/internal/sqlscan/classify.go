package sqlscan

import "strings"

// Taint is what a statement may leave on its connection.
type Taint uint8

const (
	TaintNone  Taint = iota // no session state
	TaintMaybe              // calls functions: check the state after its unit
	TaintSure               // can create session state: close the connection after its unit
)

// ResetsStatements reports whether sql may deallocate prepared statements
// of its connection (DEALLOCATE, DISCARD): the connection's statement
// caches must then be dropped before its next statement.
func ResetsStatements(sql string) bool {
	reset := false
	scanSQL(sql, func(stmt []token) {
		if len(stmt) > 0 && (stmt[0].is("deallocate") || stmt[0].is("discard")) {
			reset = true
		}
	})
	return reset
}

// Classify tells what session state sql may leave on its connection.
func Classify(sql string) Taint {
	worst := TaintNone
	scanSQL(sql, func(stmt []token) {
		worst = max(worst, classifyStatement(stmt))
	})
	return worst
}

func classifyStatement(stmt []token) Taint {
	if len(stmt) == 0 {
		return TaintNone
	}
	first := stmt[0]
	switch {
	case first.is("set"):
		if len(stmt) > 1 && (stmt[1].is("local") || stmt[1].is("transaction") || stmt[1].is("constraints")) {
			break
		}
		return TaintSure
	case first.keyword() && sessionCommands[first.name()]:
		return TaintSure
	}
	t := TaintNone
	if first.is("call") {
		t = TaintMaybe
	}
	for i, tk := range stmt {
		if !tk.word {
			continue
		}
		w := tk.name()
		if tk.keyword() && (w == "temp" || w == "temporary") || strings.HasPrefix(w, "pg_temp") {
			return TaintSure
		}
		if i+1 < len(stmt) && stmt[i+1].is("(") {
			switch {
			case sessionFunctions[w]:
				return TaintSure
			case !harmlessFunctions[w] && isCall(stmt, i):
				t = TaintMaybe
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
