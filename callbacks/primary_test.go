package callbacks

import (
	"context"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

type primaryRow struct {
	ID   uint
	Name string
}

// dryRunDB is GORM on PostgreSQL's dialect that builds statements and
// runs none.
func dryRunDB(tb testing.TB) *gorm.DB {
	db, err := gorm.Open(postgres.New(postgres.Config{DSN: "host=127.0.0.1 port=1"}),
		&gorm.Config{DryRun: true, DisableAutomaticPing: true, Logger: logger.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

func TestRegisterPrimary(t *testing.T) {
	db := dryRunDB(t)
	touched := 0
	if err := RegisterPrimary(db, func(*Session) { touched++ }); err != nil {
		t.Fatal(err)
	}
	sctx := WithSession(context.Background())
	for _, c := range []struct {
		name string
		run  func(*gorm.DB)
		want int
	}{
		{"create", func(db *gorm.DB) { db.Create(&primaryRow{Name: "a"}) }, 1},
		{"update", func(db *gorm.DB) { db.Model(&primaryRow{ID: 1}).Update("name", "b") }, 1},
		{"delete", func(db *gorm.DB) { db.Delete(&primaryRow{ID: 1}) }, 1},
		{"exec", func(db *gorm.DB) { db.Exec("UPDATE primary_rows SET name = 'c'") }, 1},
		{"raw write scanned", func(db *gorm.DB) {
			var id uint
			db.Raw("INSERT INTO primary_rows (name) VALUES ('d') RETURNING id").Scan(&id)
		}, 1},
		{"query", func(db *gorm.DB) { db.First(&primaryRow{}) }, 0},
		{"raw read", func(db *gorm.DB) {
			var n int
			db.Raw("SELECT count(*) FROM primary_rows").Scan(&n)
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			touched = 0
			c.run(db)
			if touched != 0 {
				t.Fatalf("without a session: touched %d times", touched)
			}
			c.run(db.WithContext(sctx))
			if touched != c.want {
				t.Fatalf("under a session: touched %d times, want %d", touched, c.want)
			}
		})
	}
}

// BenchmarkPrimaryCallback measures what the primary region's session
// callback adds to a statement without a session: GORM building a First
// with and without it (dry run, no database).
func BenchmarkPrimaryCallback(b *testing.B) {
	plain, with := dryRunDB(b), dryRunDB(b)
	if err := RegisterPrimary(with, func(*Session) {}); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		db   *gorm.DB
	}{{"plain", plain}, {"flypg", with}} {
		b.Run("with="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var r primaryRow
				c.db.First(&r)
			}
		})
	}
}
