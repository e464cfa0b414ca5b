package flypg_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

type twoRegions struct {
	cluster        *pgtest.Cluster
	primary        *gorm.DB // the primary-region app
	replica        *gorm.DB // the replica-region app
	pPlug, rPlug   *flypg.Plugin
	executorTarget string
}

// openGORM opens plain GORM on dsn, closed when the test ends.
func openGORM(tb testing.TB, dsn string) *gorm.DB {
	tb.Helper()
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if s, err := db.DB(); err == nil {
			s.Close()
		}
	})
	return db
}

func startTwoRegions(t *testing.T, opts ...func(primary, replica *flypg.Config)) *twoRegions {
	t.Helper()
	c := pgtest.StartT(t, pgtest.Options{Replicas: 1})
	e := &twoRegions{cluster: c}
	pcfg := flypg.Config{Region: "iad", PrimaryRegion: "iad", Secret: testkit.Secret}
	rcfg := flypg.Config{Region: "syd", PrimaryRegion: "iad", Secret: testkit.Secret, AwaitTimeout: 5 * time.Second}
	for _, o := range opts {
		o(&pcfg, &rcfg)
	}
	e.primary = openGORM(t, c.Primary.DSN(""))
	e.pPlug = flypg.New(pcfg)
	if err := e.primary.Use(e.pPlug); err != nil {
		t.Fatal(err)
	}
	e.executorTarget = testkit.Serve(t, e.pPlug)

	e.replica = openGORM(t, c.Replicas[0].DSN(""))
	rcfg.PrimaryAddr = e.executorTarget
	e.rPlug = flypg.New(rcfg)
	if err := e.replica.Use(e.rPlug); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rPlug.Close() })
	return e
}

type Widget struct {
	ID    uint
	Name  string `gorm:"uniqueIndex"`
	Count int
}

func TestSmokeReadYourWrites(t *testing.T) {
	e := startTwoRegions(t)
	ctx := context.Background()
	// Migrations run in the primary region, locally.
	if err := e.primary.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := e.cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		w := Widget{Name: "w" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Count: i}
		if err := e.replica.Create(&w).Error; err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if w.ID == 0 {
			t.Fatal("no ID after a forwarded create")
		}
		var got Widget
		if err := e.replica.First(&got, w.ID).Error; err != nil {
			t.Fatalf("read-your-write %d: %v", i, err)
		}
		if err := e.replica.Model(&got).Update("count", i+100).Error; err != nil {
			t.Fatal(err)
		}
		var again Widget
		e.replica.First(&again, w.ID)
		if again.Count != i+100 {
			t.Fatalf("update not visible: %d", again.Count)
		}
	}
	// Transactions are forwarded whole.
	err := e.replica.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Widget{Name: "tx1"}).Error; err != nil {
			return err
		}
		var n int64
		tx.Model(&Widget{}).Where("name = ?", "tx1").Count(&n)
		if n != 1 {
			return errors.New("read inside the transaction missed its write")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	e.replica.Model(&Widget{}).Where("name = ?", "tx1").Count(&n)
	if n != 1 {
		t.Fatal("committed transaction not visible locally")
	}
}

type Hooked struct {
	ID   uint
	Name string
}

func (h *Hooked) AfterCreate(tx *gorm.DB) error { return nil }

func TestDefaultTransactionIsOneRoundTrip(t *testing.T) {
	e := startTwoRegions(t)
	ctx := context.Background()
	local := e.primary.Session(&gorm.Session{Context: fly.Local(ctx)})
	if err := local.AutoMigrate(&Widget{}, &Hooked{}); err != nil {
		t.Fatal(err)
	}
	e.cluster.WaitReplicated(ctx)
	rpcs := func() uint64 { return e.rPlug.Stats().Forward.RPCs }

	before := rpcs()
	w := Widget{Name: "one"}
	if err := e.replica.Create(&w).Error; err != nil {
		t.Fatal(err)
	}
	if d := rpcs() - before; d != 1 {
		t.Fatalf("Create with GORM's default transaction took %d round trips, want 1", d)
	}
	before = rpcs()
	if err := e.replica.Model(&w).Update("count", 7).Error; err != nil {
		t.Fatal(err)
	}
	if d := rpcs() - before; d != 1 {
		t.Fatalf("Update took %d round trips, want 1", d)
	}
	before = rpcs()
	if err := e.replica.Delete(&w).Error; err != nil {
		t.Fatal(err)
	}
	if d := rpcs() - before; d != 1 {
		t.Fatalf("Delete took %d round trips, want 1", d)
	}
	// An after-hook may run statements in the transaction: COMMIT is a
	// round trip of its own.
	before = rpcs()
	if err := e.replica.Create(&Hooked{Name: "h"}).Error; err != nil {
		t.Fatal(err)
	}
	if d := rpcs() - before; d != 2 {
		t.Fatalf("Create of a model with AfterCreate took %d round trips, want 2", d)
	}
}

func TestCallErrorCodesAndStart(t *testing.T) {
	e := startTwoRegions(t)
	var refuse flypg.Function[string, string]
	for _, p := range []*flypg.Plugin{e.pPlug, e.rPlug} {
		var err error
		refuse, err = flypg.Register(p, "refuse", func(ctx context.Context, tx *gorm.DB, in string) (string, error) {
			return "", flypg.NewCallError("no_such_thing", "no "+in)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	// Remote (replica region to primary) and in-process (primary region)
	// failures look the same to the caller.
	for name, db := range map[string]*gorm.DB{"remote": e.replica, "in-process": e.primary} {
		_, err := refuse.Call(ctx, db, "widget")
		var ce *flypg.CallError
		if !errors.As(err, &ce) || ce.Code != "no_such_thing" || ce.Message != "no widget" || ce.Name != "refuse" {
			t.Fatalf("%s: %v (%#v), want a CallError with the function's code", name, err, ce)
		}
		if flypg.SafeToRetry(err) {
			t.Fatalf("%s: a function's own failure reported safe to retry", name)
		}
	}
	if _, err := flypg.Declare[string, string]("nope").Call(ctx, e.replica, ""); !errors.Is(err, flypg.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
	// The deprecated untyped form keeps working.
	if _, err := flypg.Call[string](ctx, e.replica, "refuse", "widget"); !errors.As(err, new(*flypg.CallError)) {
		t.Fatalf("flypg.Call: %v", err)
	}

	// Start reports a configuration error at once instead of from a
	// goroutine: a replica-region node serving calls needs nothing more,
	// but a closed plugin refuses.
	lis := testkit.Listen(t)
	if err := e.rPlug.Start(lis); err != nil {
		t.Fatalf("Start on a replica-region node: %v", err)
	}
	closed := flypg.New(flypg.Config{})
	if err := closed.Start(lis); err == nil {
		t.Fatal("Start before db.Use succeeded")
	}
}

// retryable is an error that says it is safe to retry, as pgconn's
// errors of a request that never left do.
type retryable struct{}

func (retryable) Error() string     { return "never sent" }
func (retryable) SafeToRetry() bool { return true }

func TestSafeToRetryAndCommitted(t *testing.T) {
	wrap := func(kind error) error {
		return fmt.Errorf("create: %w", &flypg.ForwardError{Op: "exec", Target: "x", Kind: kind})
	}
	tests := []struct {
		name            string
		err             error
		safe, committed bool
	}{
		{"nil", nil, false, false},
		{"plain error", errors.New("something"), false, false},
		{"unavailable", wrap(flypg.ErrUnavailable), true, false},
		{"busy", wrap(flypg.ErrBusy), true, false},
		{"transaction aborted", wrap(flypg.ErrTxAborted), true, false},
		{"in doubt", wrap(flypg.ErrInDoubt), false, false},
		{"unauthenticated", wrap(flypg.ErrUnauthenticated), false, false},
		{"PostgreSQL refused", &pgconn.PgError{Code: "23505"}, false, false},
		{"pgx: never sent", fmt.Errorf("query: %w", retryable{}), true, false},
		{"replication timeout", &flypg.ReplicationError{}, false, true},
		// A wait whose last look failed with an error that says "safe to
		// retry" still reports a committed write: never retry it.
		{"replication error over a retryable look", fmt.Errorf("create: %w", &flypg.ReplicationError{Err: retryable{}}), false, true},
		{"GORM failed after the commit", &flypg.CommittedError{Err: errors.New("scan")}, false, true},
		{"result lost", fmt.Errorf("gorm: %w", &flypg.ResultLostError{Op: "exec", Reason: "gone"}), false, true},
	}
	for _, tt := range tests {
		if got := flypg.SafeToRetry(tt.err); got != tt.safe {
			t.Errorf("%s: SafeToRetry = %v, want %v", tt.name, got, tt.safe)
		}
		if got := flypg.Committed(tt.err); got != tt.committed {
			t.Errorf("%s: Committed = %v, want %v", tt.name, got, tt.committed)
		}
	}
}
