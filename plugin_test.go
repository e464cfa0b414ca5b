package flypg_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/pgtest"
)

const testSecret = "plugin-test-secret-0123456789"

type twoRegions struct {
	cluster        *pgtest.Cluster
	primary        *gorm.DB // the primary-region app
	replica        *gorm.DB // the replica-region app
	pPlug, rPlug   *flypg.Plugin
	executorTarget string
}

func startTwoRegions(t *testing.T, opts ...func(primary, replica *flypg.Config)) *twoRegions {
	t.Helper()
	c := pgtest.StartT(t, pgtest.Options{Replicas: 1})
	open := func(dsn string) *gorm.DB {
		db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if s, err := db.DB(); err == nil {
				s.Close()
			}
		})
		return db
	}
	e := &twoRegions{cluster: c}
	pcfg := flypg.Config{Region: "iad", PrimaryRegion: "iad", Secret: testSecret}
	rcfg := flypg.Config{Region: "syd", PrimaryRegion: "iad", Secret: testSecret, AwaitTimeout: 5 * time.Second}
	for _, o := range opts {
		o(&pcfg, &rcfg)
	}
	e.primary = open(c.Primary.DSN(""))
	e.pPlug = flypg.New(pcfg)
	if err := e.primary.Use(e.pPlug); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.pPlug.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.pPlug.Serve(lis) }()
	t.Cleanup(func() {
		e.pPlug.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.executorTarget = lis.Addr().String()

	e.replica = open(c.Replicas[0].DSN(""))
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
