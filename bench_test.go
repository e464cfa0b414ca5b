package flypg_test

import (
	"context"
	"testing"

	"gorm.io/gorm"

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
//	go test -run XXX -bench PrimaryRegion -count 8 . > old.txt && benchstat -col /with old.txt
func BenchmarkPrimaryRegion(b *testing.B) {
	c := pgtest.StartT(b, pgtest.Options{})
	plain := openGORM(b, c.Primary.DSN(""))
	withPlugin := openGORM(b, c.Primary.DSN(""))
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
		b.Run("create/with="+tc.name, func(b *testing.B) {
			db := tc.db.WithContext(ctx)
			// Each run starts from an empty table, so that neither variant
			// pays for the rows the other inserted.
			if err := plain.Exec("TRUNCATE bench_rows").Error; err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := db.Create(&benchRow{Name: "x"}).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("first/with="+tc.name, func(b *testing.B) {
			db := tc.db.WithContext(ctx)
			if err := plain.Create(&benchRow{Name: "first"}).Error; err != nil {
				b.Fatal(err)
			}
			var r benchRow
			for b.Loop() {
				if err := db.First(&r).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
