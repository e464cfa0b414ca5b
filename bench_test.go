package flypg_test

import (
	"context"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/pgtest"
)

type benchRow struct {
	ID    uint
	Name  string
	Count int
}

// BenchmarkPrimaryRegion compares plain GORM with GORM plus flypg in the
// primary region, where flypg must cost nothing: a Create and a First on
// the same primary, interleaved so that both see the same machine state.
//
//	go test -run XXX -bench PrimaryRegion -count 6 . | benchstat -
func BenchmarkPrimaryRegion(b *testing.B) {
	c := pgtest.StartT(b, pgtest.Options{})
	open := func() *gorm.DB {
		db, err := gorm.Open(postgres.Open(c.Primary.DSN("")), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if s, err := db.DB(); err == nil {
				s.Close()
			}
		})
		return db
	}
	plain := open()
	withPlugin := open()
	p := flypg.New(flypg.Config{Region: "iad", PrimaryRegion: "iad"})
	if err := withPlugin.Use(p); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := plain.AutoMigrate(&benchRow{}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		db   *gorm.DB
	}{{"plain", plain}, {"flypg", withPlugin}} {
		b.Run(tc.name+"/create", func(b *testing.B) {
			db := tc.db.WithContext(ctx)
			for b.Loop() {
				if err := db.Create(&benchRow{Name: "x"}).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/first", func(b *testing.B) {
			db := tc.db.WithContext(ctx)
			var r benchRow
			for b.Loop() {
				if err := db.First(&r).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
