package integration

import (
	"context"
	"testing"
	"time"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestAvailLocalPromoted fails the primary over to the replica-region
// app's own replica while writers run: the primary stops, the local
// replica is promoted. Within 5 s of the promotion, writes succeed again,
// on the promoted database, with no restart of the app; every write
// acknowledged (before, during or after) is there exactly once, and no
// key appears twice.
func TestAvailLocalPromoted(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 1})
	e := newFaultEnv(t, faultConfig{cluster: c, awaitTimeout: 5 * time.Second, rpcTimeout: 2 * time.Second})
	e.mustWrite("before")
	ctx := context.Background()

	w := startWriters(4, func(key string) error { return e.write(ctx, key) })
	defer w.Stop()
	testkit.Eventually(t, 20*time.Second, func() bool { return w.count(time.Time{}) >= 20 }, "writes before the failover")

	noErr(t, c.Primary.Stop(ctx))
	e.stopExecutor()
	promoted := time.Now()
	noErr(t, c.Replicas[0].Promote(ctx))
	if !testkit.Poll(5*time.Second, func() bool { return w.count(promoted) > 0 }) {
		t.Fatalf("no write acknowledged within 5s of the promotion: %s", w.lastError())
	}
	t.Logf("first write acknowledged %s after the promotion began", w.first(promoted).Sub(promoted).Round(time.Millisecond))
	if !e.rPlug.WritesLocally() {
		t.Error("writes succeed, but the app does not say it writes locally")
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return w.count(promoted) >= 20 }, "more writes on the new primary")
	// The promoted database holds every acknowledged write once.
	w.audit(t, openGORM(t, c.Replicas[0].DSN(e.dbname)))

	// A node of this region started now (a restart, a new machine) finds
	// its database promoted and writes on it too, although its
	// configuration still names another primary region.
	db, plug := e.replicaApp(e.target)
	if !plug.WritesLocally() {
		t.Error("a node started after the promotion does not write locally")
	}
	ok(t, db.Create(&faultWrite{Key: "after-restart"}))
	if n := countRows(t, openGORM(t, c.Replicas[0].DSN(e.dbname)), "fault_writes", "key = 'after-restart'"); n != 1 {
		t.Errorf("the restarted node's write is on the promoted database %d times", n)
	}
	// Told not to follow, it refuses to start instead of forwarding from
	// a database that is not a replica.
	refused := openGORM(t, c.Replicas[0].DSN(e.dbname))
	if err := refused.Use(flypg.New(flypg.Config{Region: replicaRegion, PrimaryRegion: primaryRegion, PrimaryAddr: e.target, Secret: testkit.Secret, DisableFollowPromotion: true})); err == nil {
		t.Error("with DisableFollowPromotion a node on a promoted database started")
	}
}
