package callbacks

import (
	"strings"
	"testing"
)

func TestCallsIn(t *testing.T) {
	for _, tc := range []struct {
		sql                         string
		primary, xactLock, sessLock bool
	}{
		{"SELECT 1", false, false, false},
		{"nextval('s')", true, false, false},
		{"SELECT pg_advisory_lock(1)", false, false, true},
		{"SELECT pg_try_advisory_lock_shared(1), pg_advisory_xact_lock(2)", false, true, true},
		{"SELECT pg_advisory_xact_lock(hashtext('job'))", false, true, false},
		{"SELECT PG_ADVISORY_UNLOCK(1)", false, false, true},
		{`SELECT "pg_advisory_lock"(1)`, false, false, true},
		{"SELECT 'pg_advisory_lock(1)'", false, false, false},
		{"UPDATE t SET n = nextval('s'); SELECT pg_advisory_unlock_all()", true, false, true},
		{"SELECT pg_advisory_lock", false, false, false},
		{"SELECT 'unterminated pg_advisory_lock(", false, false, false},
	} {
		c := callsIn(tc.sql)
		if c.has(sqlFnPrimary) != tc.primary || c.has(sqlFnXactLock) != tc.xactLock || c.has(sqlFnSessionLock) != tc.sessLock {
			t.Errorf("callsIn(%q) = primary %v, xact lock %v, session lock %v; want %v, %v, %v", tc.sql,
				c.has(sqlFnPrimary), c.has(sqlFnXactLock), c.has(sqlFnSessionLock), tc.primary, tc.xactLock, tc.sessLock)
		}
	}
}

// TestPrimaryFunctionsAreNotReads: every listed function, called from a
// SELECT, sends the statement to the primary.
func TestPrimaryFunctionsAreNotReads(t *testing.T) {
	for _, name := range PrimaryFunctions() {
		if name != strings.ToLower(name) {
			t.Errorf("%s: names are listed in lower case", name)
		}
		sql := "SELECT " + strings.ToUpper(name) + "(1)"
		if IsRead(sql) {
			t.Errorf("IsRead(%q) = true", sql)
		}
	}
}
