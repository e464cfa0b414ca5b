package pgtest

import (
	"net"
	"testing"
)

func TestNodeLifecycle(t *testing.T) {
	ctx := testCtx(t)
	c := StartT(t, Options{Replicas: 1})
	p, r := c.Primary, c.Replicas[0]
	primary := connect(t, ctx, p)
	mustExec(t, ctx, primary, "CREATE TABLE t (id int PRIMARY KEY)")

	if err := r.Start(ctx); err == nil {
		t.Error("Start of a running node succeeded")
	}

	t.Run("StopStartReplica", func(t *testing.T) {
		port := r.Port()
		if err := r.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if r.PID() != 0 {
			t.Error("PID() != 0 after Stop")
		}
		if err := r.Stop(ctx); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		mustExec(t, ctx, primary, "INSERT INTO t VALUES (1)")
		// Stopped replicas are skipped, not waited for.
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatalf("WaitReplicated with a stopped replica: %v", err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Port() != port {
			t.Errorf("port changed across restart: %d -> %d", port, r.Port())
		}
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatal(err)
		}
		replica := connect(t, ctx, r)
		if queryInt(t, ctx, replica, "SELECT count(*) FROM t WHERE id = 1") != 1 {
			t.Error("row written while the replica was stopped is missing")
		}
	})

	t.Run("KillStartPrimary", func(t *testing.T) {
		pid := p.PID()
		children := childPIDs(pid)
		if len(children) == 0 {
			t.Fatal("postmaster has no children")
		}
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		for _, pid := range append(children, pid) {
			if !processGone(pid) {
				t.Errorf("process %d survived Kill", pid)
			}
		}
		if _, err := primary.Exec(ctx, "SELECT 1"); err == nil {
			t.Error("connection to the killed primary still works")
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		primary := connect(t, ctx, p)
		mustExec(t, ctx, primary, "INSERT INTO t VALUES (2)")
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatal(err)
		}
		replica := connect(t, ctx, r)
		if queryInt(t, ctx, replica, "SELECT count(*) FROM t") != 2 {
			t.Error("replica did not follow the restarted primary")
		}
	})

	t.Run("Promote", func(t *testing.T) {
		if err := p.Promote(ctx); err == nil {
			t.Error("Promote of the primary succeeded")
		}
		if err := r.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		replica := connect(t, ctx, r)
		if queryBool(t, ctx, replica, "SELECT pg_is_in_recovery()") {
			t.Fatal("promoted replica is still in recovery")
		}
		mustExec(t, ctx, replica, "INSERT INTO t VALUES (3)")
		// A promoted replica is skipped too.
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatalf("WaitReplicated with a promoted replica: %v", err)
		}
	})
}

// TestStartRetriesTakenPort takes a new node's port before it starts, as
// another process could: the node must move to another port rather than
// fail or, worse, report another server as its own.
func TestStartRetriesTakenPort(t *testing.T) {
	requirePostgres(t)
	ctx := testCtx(t)
	binDir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	run, err := newRunner(binDir)
	if err != nil {
		t.Fatal(err)
	}
	n, err := newNode(run, "primary")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.shutdown(closeGrace, t.Logf); err != nil {
			t.Error(err)
		}
	})
	if err := initPrimary(ctx, run, n, defaultSettings(0), 0); err != nil {
		t.Fatal(err)
	}
	taken := n.Port()
	ln, err := net.Listen("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	if err := n.startFirst(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Port() == taken {
		t.Fatalf("node reports port %d, which the test holds", taken)
	}
	conn := connect(t, ctx, n)
	if queryInt(t, ctx, conn, "SELECT current_setting('port')::int") != n.Port() {
		t.Error("server does not listen on the port the node reports")
	}
}
