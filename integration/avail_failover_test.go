package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestAvailFailoverTwoReplicas: a primary and two replicas, an executor
// on the primary and one on replica 1's region (NOT_SERVING while its
// database is in recovery), and a replica-region app on replica 2 whose
// PrimaryAddr lists both executors. Writers run while the primary fails
// over to replica 1 (stopped, promoted, replica 2 re-pointed onto the new
// timeline): with no restart, the app's writes reach the new primary's
// executor through the health-checked target and wait on replica 2
// replaying the new timeline; every acknowledged write is on the new
// primary exactly once, and no key is there twice.
func TestAvailFailoverTwoReplicas(t *testing.T) {
	t.Parallel()
	c := ownCluster(t, pgtest.Options{Replicas: 2})
	dbname := createDatabase(t, c, "f_failover")
	_, _, addr0 := servePrimary(t, c.Primary.DSN(dbname))
	_, _, addr1 := servePrimary(t, c.Replicas[0].DSN(dbname))

	plain := openGORM(t, c.Primary.DSN(dbname))
	if err := plain.Session(&gorm.Session{Context: fly.Local(context.Background())}).AutoMigrate(&faultWrite{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	noErr(t, c.WaitReplicated(ctx))

	app := openGORM(t, c.Replicas[1].DSN(dbname))
	plug := flypg.New(flypg.Config{
		Region: replicaRegion, PrimaryRegion: primaryRegion, Secret: testkit.Secret,
		PrimaryAddr:  strings.Join([]string{addr0, addr1}, ","),
		AwaitTimeout: 10 * time.Second, RPCTimeout: 3 * time.Second,
	})
	if err := app.Use(plug); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plug.Close() })

	w := startWriters(4, func(key string) error { return app.Create(&faultWrite{Key: key}).Error })
	defer w.Stop()
	testkit.Eventually(t, 20*time.Second, func() bool { return w.count(time.Time{}) >= 20 }, "writes before the failover")

	began := time.Now()
	noErr(t, c.Failover(ctx, 0))
	failedOver := time.Now()
	if !testkit.Poll(10*time.Second, func() bool { return w.count(failedOver) > 0 }) {
		t.Fatalf("no write acknowledged within 10s of the failover: %s; health %s %s", w.lastError(), healthOf(t, addr0), healthOf(t, addr1))
	}
	t.Logf("failover took %s; first write acknowledged %s after it", failedOver.Sub(began).Round(time.Millisecond), w.first(failedOver).Sub(failedOver).Round(time.Millisecond))
	testkit.Eventually(t, 20*time.Second, func() bool { return w.count(failedOver) >= 20 }, "more writes on the new primary")
	w.audit(t, openGORM(t, c.Primary.DSN(dbname)))
	if plug.WritesLocally() {
		t.Error("the app writes locally, but its database is still a replica")
	}
	// Read-your-writes on replica 2, which follows the new timeline.
	last := w.keys[len(w.keys)-1]
	var n int64
	ok(t, app.Model(&faultWrite{}).Where("key = ?", last).Count(&n))
	if n != 1 {
		t.Errorf("the last acknowledged write reads back %d times on the app's replica", n)
	}
}

func healthOf(t *testing.T, addr string) string {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(secretCredentials(t, testkit.Secret)))
	if err != nil {
		return err.Error()
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: forwardpb.Executor_ServiceDesc.ServiceName})
	if err != nil {
		return err.Error()
	}
	return r.GetStatus().String()
}
