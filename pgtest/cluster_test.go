package pgtest

import (
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestClusterReplicates(t *testing.T) {
	requirePostgres(t)
	ctx := testCtx(t)

	begin := time.Now()
	c, err := Start(ctx, Options{
		Replicas: 1,
		Settings: map[string]string{"work_mem": "8MB", "max_connections": "250"},
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("start-up of primary + 1 replica: %s", time.Since(begin).Round(time.Millisecond))
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
	})
	if got := len(c.Replicas); got != 1 {
		t.Fatalf("len(Replicas) = %d, want 1", got)
	}
	if c.ReplicationLink(0) != nil {
		t.Error("ReplicationLink(0) != nil without ReplicationLinks")
	}

	primary := connect(t, ctx, c.Primary)
	replica := connect(t, ctx, c.Replicas[0])
	mustExec(t, ctx, primary, "CREATE TABLE t (id int PRIMARY KEY)")
	mustExec(t, ctx, primary, "INSERT INTO t VALUES (1), (2)")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, ctx, replica, "SELECT count(*) FROM t"); n != 2 {
		t.Errorf("replica has %d rows, want 2", n)
	}
	if !queryBool(t, ctx, replica, "SELECT pg_is_in_recovery()") {
		t.Error("replica: pg_is_in_recovery() = false")
	}
	if queryBool(t, ctx, primary, "SELECT pg_is_in_recovery()") {
		t.Error("primary: pg_is_in_recovery() = true")
	}
	if _, err := replica.Exec(ctx, "INSERT INTO t VALUES (3)"); err == nil {
		t.Error("write on the replica succeeded")
	}
	if !queryBool(t, ctx, primary, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication
		WHERE application_name = 'replica1' AND state = 'streaming')`) {
		t.Error("primary: no streaming replica named replica1 in pg_stat_replication")
	}
	// Options.Settings reach every node and override the defaults.
	for _, conn := range []*pgx.Conn{primary, replica} {
		var workMem string
		if err := conn.QueryRow(ctx, "SHOW work_mem").Scan(&workMem); err != nil || workMem != "8MB" {
			t.Errorf("work_mem = %q, %v; want 8MB", workMem, err)
		}
		if mc := queryInt(t, ctx, conn, "SELECT current_setting('max_connections')::int"); mc != 250 {
			t.Errorf("max_connections = %d, want 250", mc)
		}
	}

	// Everything Close must remove.
	var pids []int
	var dirs []string
	for _, n := range append([]*Node{c.Primary}, c.Replicas...) {
		pid := n.PID()
		if pid == 0 {
			t.Fatalf("%s: PID() = 0 while running", n.Name())
		}
		pids = append(pids, pid)
		pids = append(pids, childPIDs(pid)...)
		dirs = append(dirs, n.dir)
	}
	primary.Close(ctx)
	replica.Close(ctx)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("process %d still running after Close", pid)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("directory %s still exists after Close (stat: %v)", d, err)
		}
	}
	if err := c.Primary.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}
}
