package callbacks

// sqlFunc is what calling a function means for routing.
type sqlFunc uint8

const (
	sqlFnNone sqlFunc = iota
	// sqlFnPrimary: the function writes, changes session state or is
	// refused by a hot standby; it runs on the primary.
	sqlFnPrimary
	// sqlFnXactLock takes an advisory lock released at the end of the
	// transaction.
	sqlFnXactLock
	// sqlFnSessionLock takes or releases an advisory lock held by the
	// connection, beyond the transaction.
	sqlFnSessionLock
)

// sqlFuncs are the built-in functions that must not run on a replica.
// Conservative on purpose: a function listed here that happens to be
// harmless costs a round trip to the primary, a missing one fails on the
// replica or, worse, acts on the replica alone.
var sqlFuncs = [...]struct {
	name string
	kind sqlFunc
}{
	// Sequences: nextval and setval write; currval and lastval read the
	// session's state, which only exists where nextval ran.
	{"nextval", sqlFnPrimary},
	{"setval", sqlFnPrimary},
	{"currval", sqlFnPrimary},
	{"lastval", sqlFnPrimary},
	// NOTIFY and session configuration.
	{"pg_notify", sqlFnPrimary},
	{"set_config", sqlFnPrimary},
	// Assigning a transaction ID, and WAL positions, which a standby
	// refuses.
	{"txid_current", sqlFnPrimary},
	{"pg_current_xact_id", sqlFnPrimary},
	{"pg_current_wal_lsn", sqlFnPrimary},
	{"pg_current_wal_insert_lsn", sqlFnPrimary},
	{"pg_current_wal_flush_lsn", sqlFnPrimary},
	{"pg_switch_wal", sqlFnPrimary},
	{"pg_create_restore_point", sqlFnPrimary},
	{"pg_logical_emit_message", sqlFnPrimary},
	// Replication slots and origins.
	{"pg_create_physical_replication_slot", sqlFnPrimary},
	{"pg_create_logical_replication_slot", sqlFnPrimary},
	{"pg_drop_replication_slot", sqlFnPrimary},
	{"pg_copy_physical_replication_slot", sqlFnPrimary},
	{"pg_copy_logical_replication_slot", sqlFnPrimary},
	{"pg_replication_slot_advance", sqlFnPrimary},
	{"pg_logical_slot_get_changes", sqlFnPrimary},
	{"pg_logical_slot_get_binary_changes", sqlFnPrimary},
	{"pg_logical_slot_peek_changes", sqlFnPrimary},
	{"pg_logical_slot_peek_binary_changes", sqlFnPrimary},
	{"pg_replication_origin_create", sqlFnPrimary},
	{"pg_replication_origin_drop", sqlFnPrimary},
	{"pg_replication_origin_advance", sqlFnPrimary},
	{"pg_replication_origin_session_setup", sqlFnPrimary},
	{"pg_replication_origin_session_reset", sqlFnPrimary},
	{"pg_replication_origin_xact_setup", sqlFnPrimary},
	{"pg_replication_origin_xact_reset", sqlFnPrimary},
	{"pg_import_system_collations", sqlFnPrimary},
	// Large objects that write (lo_open too: its mode is an argument).
	{"lo_create", sqlFnPrimary},
	{"lo_creat", sqlFnPrimary},
	{"lo_import", sqlFnPrimary},
	{"lo_unlink", sqlFnPrimary},
	{"lo_from_bytea", sqlFnPrimary},
	{"lo_put", sqlFnPrimary},
	{"lo_open", sqlFnPrimary},
	{"lowrite", sqlFnPrimary},
	{"lo_truncate", sqlFnPrimary},
	{"lo_truncate64", sqlFnPrimary},
	// Advisory locks: a standby grants them, but only against its own
	// sessions, so mutual exclusion with the primary region is lost.
	{"pg_advisory_xact_lock", sqlFnXactLock},
	{"pg_advisory_xact_lock_shared", sqlFnXactLock},
	{"pg_try_advisory_xact_lock", sqlFnXactLock},
	{"pg_try_advisory_xact_lock_shared", sqlFnXactLock},
	{"pg_advisory_lock", sqlFnSessionLock},
	{"pg_advisory_lock_shared", sqlFnSessionLock},
	{"pg_try_advisory_lock", sqlFnSessionLock},
	{"pg_try_advisory_lock_shared", sqlFnSessionLock},
	{"pg_advisory_unlock", sqlFnSessionLock},
	{"pg_advisory_unlock_shared", sqlFnSessionLock},
	{"pg_advisory_unlock_all", sqlFnSessionLock},
}

// PrimaryFunctions returns the names of the built-in functions whose call
// sends raw SQL to the primary (IsRead answers false): sequence functions,
// pg_notify, set_config, transaction IDs and WAL positions, replication
// slots and origins, large-object writes and every advisory lock function.
func PrimaryFunctions() []string {
	out := make([]string, len(sqlFuncs))
	for i, f := range sqlFuncs {
		out[i] = f.name
	}
	return out
}

// sqlLookupFunc classifies a function name. An unquoted name is matched
// ignoring ASCII case; a quoted one exactly, as PostgreSQL does.
func sqlLookupFunc(name string, quoted bool) sqlFunc {
	for _, f := range sqlFuncs {
		if len(f.name) != len(name) {
			continue
		}
		if quoted && name == f.name || !quoted && sqlEqualFoldLower(name, f.name) {
			return f.kind
		}
	}
	return sqlFnNone
}

// sqlEqualFoldLower reports whether w equals lower, a lower-case ASCII name
// of the same length, ignoring ASCII case.
func sqlEqualFoldLower(w, lower string) bool {
	for i := 0; i < len(lower); i++ {
		c := w[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// sqlCalls is the set of function kinds a text calls.
type sqlCalls uint8

func (c sqlCalls) has(k sqlFunc) bool { return c&(1<<k) != 0 }

// callsIn returns the kinds of the listed functions that sql calls,
// anywhere: in any statement, subquery or fragment (a GORM Select or Where
// expression). Text hidden in strings and comments does not count.
func callsIn(sql string) sqlCalls {
	s := sqlScanner{src: sql}
	var calls sqlCalls
	for {
		tok, word := s.next()
		switch tok {
		case sqlTokEOF, sqlTokInvalid:
			return calls
		case sqlTokLParen:
			if k := s.call(); k != sqlFnNone {
				calls |= 1 << k
			}
		}
		s.lastTok, s.lastWord = tok, word
	}
}
