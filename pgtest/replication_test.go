package pgtest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
	"github.com/jackc/pgx/v5"
)

// replayDelay commits a write on the primary and returns how long it takes
// until the replica has replayed it, polling pg_last_wal_replay_lsn.
func replayDelay(t *testing.T, ctx context.Context, primary, replica *pgx.Conn) time.Duration {
	t.Helper()
	begin := time.Now()
	mustExec(t, ctx, primary, "INSERT INTO t DEFAULT VALUES")
	var lsn string
	if err := primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	for !queryBool(t, ctx, replica, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn) {
		if ctx.Err() != nil {
			t.Fatalf("replica never replayed %s", lsn)
		}
	}
	return time.Since(begin)
}

// medianReplayDelay is the median of a few replayDelays, to shrug off
// scheduling noise on a busy machine.
func medianReplayDelay(t *testing.T, ctx context.Context, primary, replica *pgx.Conn) time.Duration {
	t.Helper()
	var ds []time.Duration
	for range 7 {
		ds = append(ds, replayDelay(t, ctx, primary, replica))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func TestReplicationLinks(t *testing.T) {
	ctx := testCtx(t)
	c := StartT(t, Options{Replicas: 1, ReplicationLinks: true})
	link := c.ReplicationLink(0)
	if link == nil {
		t.Fatal("ReplicationLink(0) = nil with ReplicationLinks")
	}
	if c.ReplicationLink(1) != nil || c.ReplicationLink(-1) != nil {
		t.Error("ReplicationLink out of range != nil")
	}
	if link.Upstream() != c.Primary.Addr() {
		t.Errorf("link upstream %s, want primary %s", link.Upstream(), c.Primary.Addr())
	}

	primary := connect(t, ctx, c.Primary)
	replica := connect(t, ctx, c.Replicas[0])
	if port := queryInt(t, ctx, replica, "SELECT sender_port FROM pg_stat_wal_receiver"); port != link.port() {
		t.Fatalf("replica streams from port %d, want the link's %d", port, link.port())
	}
	mustExec(t, ctx, primary, "CREATE TABLE t (id serial PRIMARY KEY)")

	t.Run("RTT", func(t *testing.T) {
		base := medianReplayDelay(t, ctx, primary, replica)
		if err := link.SetRTT(40 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		slow := medianReplayDelay(t, ctx, primary, replica)
		if err := link.SetRTT(0); err != nil {
			t.Fatal(err)
		}
		t.Logf("replay delay: %s without RTT, %s with RTT 40ms", base, slow)
		// WAL crosses the link once, primary to replica: half the RTT.
		// The latency toxic holds every chunk for the full 20ms, so slow
		// has a hard floor; the difference allows for noise in base.
		if slow < 20*time.Millisecond || slow-base < 15*time.Millisecond {
			t.Errorf("RTT 40ms added only %s to the replay delay, want ~20ms", slow-base)
		}
	})

	t.Run("CutRestore", func(t *testing.T) {
		if err := link.Cut(); err != nil {
			t.Fatal(err)
		}
		mustExec(t, ctx, primary, "INSERT INTO t VALUES (-1)")
		var lsn string
		if err := primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		// Absence of progress can only be observed over a window.
		if testkit.Poll(300*time.Millisecond, func() bool {
			return queryBool(t, ctx, replica, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn)
		}) {
			t.Fatal("replica replayed WAL while its link was cut")
		}
		if queryInt(t, ctx, replica, "SELECT count(*) FROM t WHERE id = -1") != 0 {
			t.Fatal("row written during the cut is on the replica")
		}

		if err := link.Restore(); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := c.WaitReplicated(wctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("replica caught up %s after Restore", time.Since(begin).Round(time.Millisecond))
		if queryInt(t, ctx, replica, "SELECT count(*) FROM t WHERE id = -1") != 1 {
			t.Error("row written during the cut missing on the replica after Restore")
		}
	})
}
