package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestAvailReady: Plugin.Ready is nil on a working deployment, in both
// regions, and names the failed check otherwise: the executor stopped,
// the local replica stopped, the local replica promoted (no longer the
// role a replica region expects). It answers within its bound.
func TestAvailReady(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1})
	e := newFaultEnv(t, faultConfig{cluster: c})
	ctx := context.Background()
	noErr(t, e.rPlug.Ready(ctx))
	noErr(t, e.x.pPlug.Ready(ctx))

	notReady := func(what, check string) {
		t.Helper()
		start := time.Now()
		err := e.rPlug.Ready(ctx)
		if d := time.Since(start); d > flypg.DefaultReadyTimeout+2*time.Second {
			t.Errorf("%s: Ready took %s", what, d)
		}
		var nr *flypg.NotReadyError
		if !errors.Is(err, flypg.ErrNotReady) || !errors.As(err, &nr) || nr.Check != check {
			t.Errorf("%s: Ready = %v, want a *NotReadyError of check %q", what, err, check)
		}
	}

	e.stopExecutor()
	notReady("executor stopped", "executor")
	e.restartExecutor()
	testkit.Eventually(t, 20*time.Second, func() bool { return e.rPlug.Ready(ctx) == nil }, "Ready after the executor restarted")

	replica := c.Replicas[0]
	noErr(t, replica.Stop(ctx))
	notReady("local replica stopped", "local database")
	noErr(t, replica.Start(ctx))
	testkit.Eventually(t, 20*time.Second, func() bool { return e.rPlug.Ready(ctx) == nil }, "Ready after the replica restarted")

	_, off := e.replicaApp(e.target, func(c *flypg.Config) { c.DisableFollowPromotion = true })
	noErr(t, replica.Promote(ctx))
	// Followed by default: the promoted database is where writes run.
	noErr(t, e.rPlug.Ready(ctx))
	if !e.rPlug.WritesLocally() {
		t.Error("Ready saw the local database promoted, yet writes are not local")
	}
	// Not followed: a replica region's database that is not a replica.
	e.rPlug = off
	notReady("local replica promoted, not followed", "role")
}
