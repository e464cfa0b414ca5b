package integration

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestAvailReplicaDown stops the replica-region app's local replica. Reads
// keep working at once (well within 2 s), on the primary; writes commit
// without waiting for the replica and are read back right after. The
// replica is then started with recovery_min_apply_delay = 1h: it answers,
// but has not replayed what this node wrote meanwhile, so reads stay on
// the primary (probes see it, at a bounded rate). Once the delay is lifted,
// reads return to the local replica, which then has every such write, and
// writes wait for it again.
func TestAvailReplicaDown(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1})
	e := newFaultEnv(t, faultConfig{cluster: c, awaitTimeout: 5 * time.Second})
	e.mustWrite("before")
	ctx := context.Background()
	replica := c.Replicas[0]
	// When it starts again, the replica will not apply what it missed.
	noErr(t, replica.Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": "1h"}))

	noErr(t, replica.Stop(ctx))
	stopped := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			replica.Start(ctx)
		}
	}()

	var got []faultWrite
	if err := e.replica.Where("key = ?", "before").Find(&got).Error; err != nil || len(got) != 1 {
		t.Fatalf("read with the local replica down: %d rows, %v", len(got), err)
	}
	if d := time.Since(stopped); d > 2*time.Second {
		t.Errorf("the first read with the local replica down returned %s after the stop", d)
	}
	if m := e.rPlug.ReadMode(); !m.Primary || m.Reason != callbacks.ReasonUnreachable {
		t.Errorf("read mode with the local replica down: %+v", m)
	}
	// A read-only transaction runs on the primary too.
	err := e.replica.Transaction(func(tx *gorm.DB) error {
		return tx.Where("key = ?", "before").Find(&got).Error
	}, &sql.TxOptions{ReadOnly: true})
	if err != nil || len(got) != 1 {
		t.Errorf("read-only transaction with the local replica down: %d rows, %v", len(got), err)
	}

	const away = 5
	for i := range away {
		start := time.Now()
		e.mustWrite(fmt.Sprintf("away-%d", i))
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("write and read back with the local replica down took %s: it waited for the replica", d)
		}
	}

	// The replica answers again, but does not replay what was written.
	noErr(t, replica.Start(ctx))
	restarted = true
	direct := openGORM(t, replica.DSN(e.dbname))
	if n := countRows(t, direct, "fault_writes", "key LIKE 'away-%'"); n != 0 {
		t.Fatalf("the replica shows %d writes made while it was down, with its replication cut", n)
	}
	probes := e.rPlug.Stats().Reads.Probes
	testkit.Eventually(t, 20*time.Second, func() bool {
		return e.rPlug.Stats().Reads.Probes >= probes+3
	}, "three probes of the running replica")
	if !e.rPlug.ReadMode().Primary {
		t.Fatal("reads returned to a local replica that has not replayed this node's writes")
	}
	if n := countRows(t, e.replica, "fault_writes", "key LIKE 'away-%'"); n != away {
		t.Errorf("reads show %d of the %d writes made while the replica was down", n, away)
	}

	noErr(t, replica.Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": ""}))
	testkit.Eventually(t, 30*time.Second, func() bool {
		return !e.rPlug.ReadMode().Primary
	}, "reads back on the local replica")
	if n := countRows(t, direct, "fault_writes", "key LIKE 'away-%'"); n != away {
		t.Errorf("reads returned to the local replica while it shows %d of the %d writes made meanwhile", n, away)
	}
	onPrimary := e.rPlug.Stats().Reads.OnPrimary
	if n := countRows(t, e.replica, "fault_writes", "key LIKE 'away-%'"); n != away {
		t.Errorf("reads show %d of the %d writes", n, away)
	}
	if e.rPlug.Stats().Reads.OnPrimary != onPrimary {
		t.Error("a read after the return still ran on the primary")
	}
	waits := e.rPlug.Stats().Tracker.Waits
	e.mustWrite("after")
	if e.rPlug.Stats().Tracker.Waits == waits {
		t.Error("a write after the return did not wait for the local replica")
	}
}
