package integration

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/flypgprom"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestAvailReplicaLag stalls the local replica's replay
// (recovery_min_apply_delay) with MaxReplicaLag 500ms and AwaitTimeout
// 10s: a write waits about MaxReplicaLag, not the timeout, and succeeds;
// reads then run on the primary (the metric and ReadMode say why) and see
// it; later writes do not wait. Once replay resumes, reads return to the
// local replica, which then shows every write, and writes wait again.
func TestAvailReplicaLag(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1})
	const maxLag = 500 * time.Millisecond
	reg := prometheus.NewRegistry()
	e := newFaultEnv(t, faultConfig{cluster: c, awaitTimeout: 10 * time.Second, plugin: func(c *flypg.Config) {
		c.MaxReplicaLag = maxLag
		m, err := flypgprom.New(reg, nil)
		noErr(t, err)
		c.Tracers = append(c.Tracers, m)
	}})
	e.mustWrite("before")
	ctx := context.Background()
	replica := c.Replicas[0]
	direct := openGORM(t, replica.DSN(e.dbname))
	noErr(t, replica.Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": "1h"}))
	testkit.Eventually(t, 10*time.Second, func() bool {
		var v string
		ok(t, direct.Raw("SELECT current_setting('recovery_min_apply_delay')").Scan(&v))
		return v == "1h"
	}, "the replica to apply the delay")
	if g := lagGauge(t, reg); g != 0 {
		t.Errorf("reads_on_primary{reason=lagging} = %v before the stall", g)
	}

	start := time.Now()
	e.mustWrite("stalled-0")
	if d := time.Since(start); d < maxLag || d > maxLag+3*time.Second {
		t.Errorf("the first write with replay stalled took %s; want about MaxReplicaLag %s", d, maxLag)
	}
	if m := e.rPlug.ReadMode(); !m.Primary || m.Reason != callbacks.ReasonLagging {
		t.Errorf("read mode with replay stalled: %+v", m)
	}
	if g := lagGauge(t, reg); g != 1 {
		t.Errorf("reads_on_primary{reason=lagging} = %v with replay stalled", g)
	}
	waits := e.rPlug.Stats().Tracker.Waits
	for _, k := range []string{"stalled-1", "stalled-2"} {
		start := time.Now()
		e.mustWrite(k)
		if d := time.Since(start); d >= maxLag {
			t.Errorf("write %s with reads on the primary took %s", k, d)
		}
	}
	if e.rPlug.Stats().Tracker.Waits != waits {
		t.Error("writes waited for the lagging replica while reads ran on the primary")
	}
	if n := countRows(t, direct, "fault_writes", "key LIKE 'stalled-%'"); n != 0 {
		t.Fatalf("the stalled replica shows %d rows", n)
	}

	noErr(t, replica.Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": ""}))
	testkit.Eventually(t, 30*time.Second, func() bool { return !e.rPlug.ReadMode().Primary }, "reads back on the local replica")
	if n := countRows(t, direct, "fault_writes", "key LIKE 'stalled-%'"); n != 3 {
		t.Errorf("reads returned to the local replica while it shows %d of 3 writes", n)
	}
	if g := lagGauge(t, reg); g != 0 {
		t.Errorf("reads_on_primary{reason=lagging} = %v after the return", g)
	}
	waits = e.rPlug.Stats().Tracker.Waits
	e.mustWrite("after")
	if e.rPlug.Stats().Tracker.Waits == waits {
		t.Error("a write after the return did not wait for the local replica")
	}
}

// lagGauge reads flypg_reads_on_primary{reason="replica lagging"}.
func lagGauge(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	noErr(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "flypg_reads_on_primary" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == callbacks.ReasonLagging {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatal("no flypg_reads_on_primary metric for lagging")
	return 0
}
