package integration

// Helpers of the security tests (security_*_test.go): an executor process
// on a fresh database, forwarding clients with a given secret, and what
// /proc says about the executor.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg/forward"
)

// secDB is a fresh database with the table the security tests write to.
type secDB struct {
	name, dsn string
	plain     *gorm.DB
}

func newSecDB(t *testing.T) *secDB {
	t.Helper()
	c := requireCluster(t)
	d := &secDB{name: createDatabase(t, c, "sec_"+strings.ToLower(safeName(t.Name())))}
	d.dsn = c.Primary.DSN(d.name)
	d.plain = openGORM(t, d.dsn)
	ok(t, d.plain.Exec(`CREATE TABLE sec_writes (id bigserial PRIMARY KEY, key text NOT NULL)`))
	return d
}

// count returns the rows of sec_writes whose key matches the LIKE pattern.
func (d *secDB) count(t testing.TB, pattern string) int64 {
	t.Helper()
	var n int64
	ok(t, d.plain.Raw(`SELECT count(*) FROM sec_writes WHERE key LIKE ?`, pattern).Scan(&n))
	return n
}

// forwarder is a forwarding *sql.DB to the executor at addr, with the
// given secrets.
func forwarder(t testing.TB, addr, secret string, old ...string) *sql.DB {
	t.Helper()
	c, err := forward.NewClient(forward.ClientConfig{Target: addr, Secret: secret, OldSecrets: old, Timeout: 10 * time.Second, ConnectWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	db := c.OpenDB()
	t.Cleanup(func() { db.Close(); c.Close() })
	return db
}

// insert writes key through db.
func insert(ctx context.Context, db *sql.DB, key string) error {
	_, err := db.ExecContext(ctx, `INSERT INTO sec_writes (key) VALUES ($1)`, key)
	return err
}

// procStatusKB reads a "kB" field (VmRSS, VmHWM) of /proc/pid/status.
func procStatusKB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, found := strings.CutPrefix(sc.Text(), field+":"); found {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, v, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// openFDs counts the open file descriptors of process pid (-1 if it is
// gone).
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

func (p *executorProcess) pid() int { return p.cmd.Process.Pid }
