package pgtest

import (
	"context"
	"testing"
	"time"
)

// TestFailover: after Failover to replica 0, the old primary is stopped,
// Primary is replica 0, which takes writes on a new timeline, and
// replica 1 follows it: it replays a write made there.
func TestFailover(t *testing.T) {
	c := StartT(t, Options{Replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mustExec(t, ctx, connect(t, ctx, c.Primary), "CREATE TABLE t (id int)")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	old := c.Primary
	if err := c.Failover(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if c.Primary != c.Replicas[0] || old.running() {
		t.Fatalf("after Failover: Primary %s, old primary running %v", c.Primary.Name(), old.running())
	}
	p := connect(t, ctx, c.Primary)
	mustExec(t, ctx, p, "INSERT INTO t VALUES (1)")
	if tli := queryInt(t, ctx, p, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"); tli < 2 {
		t.Errorf("the new primary is on timeline %d", tli)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, ctx, connect(t, ctx, c.Replicas[1]), "SELECT count(*) FROM t"); n != 1 {
		t.Errorf("replica 1 shows %d rows written on the new primary", n)
	}
}
