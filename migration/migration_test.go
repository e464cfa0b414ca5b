package migration

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg/pgtest"
)

// gooseSections splits a goose file into its Up and Down SQL, dropping the
// annotations.
func gooseSections(src string) (up, down string) {
	var cur *strings.Builder
	var u, d strings.Builder
	for _, line := range strings.SplitAfter(src, "\n") {
		switch strings.TrimSpace(line) {
		case "-- +goose Up":
			cur = &u
			continue
		case "-- +goose Down":
			cur = &d
			continue
		case "-- +goose StatementBegin", "-- +goose StatementEnd":
			continue
		}
		if cur != nil {
			cur.WriteString(line)
		}
	}
	return u.String(), d.String()
}

func TestLayoutsCarryTheSameSQL(t *testing.T) {
	all := All()
	if len(all) == 0 {
		t.Fatal("no migrations")
	}
	gooseFiles, err := fs.Glob(Goose(), "*.sql")
	if err != nil || len(gooseFiles) != len(all) {
		t.Fatalf("goose files %v (%v), want %d", gooseFiles, err, len(all))
	}
	for i, m := range all {
		if m.Up == "" || m.Down == "" {
			t.Fatalf("migration %d has empty SQL", m.Version)
		}
		b, err := fs.ReadFile(Goose(), gooseFiles[i])
		if err != nil {
			t.Fatal(err)
		}
		up, down := gooseSections(string(b))
		if strings.TrimSpace(up) != strings.TrimSpace(m.Up) || strings.TrimSpace(down) != strings.TrimSpace(m.Down) {
			t.Fatalf("%s differs from the golang-migrate files of version %d", gooseFiles[i], m.Version)
		}
	}
	migrateFiles, _ := fs.Glob(GolangMigrate(), "*.sql")
	if len(migrateFiles) != 2*len(all) {
		t.Fatalf("golang-migrate files %v, want an up and a down per migration", migrateFiles)
	}
}

func cluster(t *testing.T) (*pgtest.Cluster, *sql.DB, *sql.DB) {
	t.Helper()
	c := pgtest.StartT(t, pgtest.Options{Replicas: 1})
	primary, err := sql.Open("pgx", c.Primary.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Close() })
	replica, err := sql.Open("pgx", c.Replicas[0].DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Close() })
	return c, primary, replica
}

func functionExists(t *testing.T, db *sql.DB) bool {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_proc WHERE proname = 'watch_for_lsn_change'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestUpDownDatabaseSQL(t *testing.T) {
	c, primary, replica := cluster(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ { // idempotent
		if err := Up(ctx, primary); err != nil {
			t.Fatalf("Up #%d: %v", i+1, err)
		}
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if !functionExists(t, replica) {
		t.Fatal("function did not replicate")
	}
	// The function answers on the replica: from 0/0 it returns at once.
	var got sql.NullString
	start := time.Now()
	if err := replica.QueryRow(`SELECT watch_for_lsn_change('0/0', 1)`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if !got.Valid || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("watch_for_lsn_change('0/0') = %v after %v", got, time.Since(start))
	}
	// From far in the future it times out with NULL.
	if err := replica.QueryRow(`SELECT watch_for_lsn_change('FFFFFFFF/0', 0.1)`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got.Valid {
		t.Fatalf("watch from the future returned %q, want NULL", got.String)
	}
	for i := 0; i < 2; i++ {
		if err := Down(ctx, primary); err != nil {
			t.Fatalf("Down #%d: %v", i+1, err)
		}
	}
	if functionExists(t, primary) {
		t.Fatal("function still exists after Down")
	}
}

func TestUpDownGORM(t *testing.T) {
	_, primary, _ := cluster(t)
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: primary}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := UpGORM(db); err != nil {
			t.Fatalf("UpGORM #%d: %v", i+1, err)
		}
	}
	if !functionExists(t, primary) {
		t.Fatal("function missing after UpGORM")
	}
	if err := DownGORM(db); err != nil {
		t.Fatal(err)
	}
	if functionExists(t, primary) {
		t.Fatal("function still exists after DownGORM")
	}
}

func TestGoose(t *testing.T) {
	_, primary, _ := cluster(t)
	p, err := goose.NewProvider(goose.DialectPostgres, primary, Goose())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("goose up: %v", err)
	}
	if !functionExists(t, primary) {
		t.Fatal("function missing after goose up")
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("goose down: %v", err)
	}
	if functionExists(t, primary) {
		t.Fatal("function still exists after goose down")
	}
}

func TestGolangMigrate(t *testing.T) {
	_, primary, _ := cluster(t)
	src, err := iofs.New(GolangMigrate(), ".")
	if err != nil {
		t.Fatal(err)
	}
	driver, err := migratepgx.WithInstance(primary, &migratepgx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Up(); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	if !functionExists(t, primary) {
		t.Fatal("function missing after migrate up")
	}
	if err := m.Up(); !errors.Is(err, migrate.ErrNoChange) {
		t.Fatalf("second migrate up: %v, want ErrNoChange", err)
	}
	if err := m.Down(); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	if functionExists(t, primary) {
		t.Fatal("function still exists after migrate down")
	}
}
