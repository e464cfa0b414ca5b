package pgtest

import (
	"context"
	"testing"
	"time"
)

// TestReconfigure: recovery_min_apply_delay set on a running replica stops
// it from applying the primary's commits; set back to 0, it catches up.
func TestReconfigure(t *testing.T) {
	c := StartT(t, Options{Replicas: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, r := connect(t, ctx, c.Primary), connect(t, ctx, c.Replicas[0])
	mustExec(t, ctx, p, "CREATE TABLE t (id serial)")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Replicas[0].Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": "1h"}); err != nil {
		t.Fatal(err)
	}
	// The reload is asynchronous: wait until the replica's own session
	// sees the new value before writing.
	for !queryBool(t, ctx, r, "SELECT current_setting('recovery_min_apply_delay') = '1h'") {
		if ctx.Err() != nil {
			t.Fatal("the setting never took effect")
		}
	}
	mustExec(t, ctx, p, "INSERT INTO t DEFAULT VALUES")
	var lsn string
	if err := p.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	// The commit's WAL arrives (received) but is not applied.
	for !queryBool(t, ctx, r, "SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", lsn) {
		if ctx.Err() != nil {
			t.Fatal("the replica never received the commit")
		}
	}
	if queryBool(t, ctx, r, "SELECT count(*) > 0 FROM t") {
		t.Fatal("the replica applied a commit with recovery_min_apply_delay = 1h")
	}
	if err := c.Replicas[0].Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": ""}); err != nil {
		t.Fatal(err)
	}
	for !queryBool(t, ctx, r, "SELECT count(*) = 1 FROM t") {
		if ctx.Err() != nil {
			t.Fatal("the replica never caught up after the delay was reset")
		}
	}
}
