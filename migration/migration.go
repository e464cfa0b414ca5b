package migration

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"gorm.io/gorm"
)

//go:embed golang-migrate/*.sql goose/*.sql
var files embed.FS

// Execer is what Up and Down need: *sql.DB, *sql.Conn and *sql.Tx have it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Migration is one versioned migration.
type Migration struct {
	Version int
	Name    string
	Up      string // SQL that applies it
	Down    string // SQL that reverts it
}

// All returns the migrations in version order.
func All() []Migration {
	return []Migration{{
		Version: 1,
		Name:    "fly_watch_for_lsn_change",
		Up:      read("golang-migrate/000001_fly_watch_for_lsn_change.up.sql"),
		Down:    read("golang-migrate/000001_fly_watch_for_lsn_change.down.sql"),
	}}
}

func read(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		// The files are embedded at build time; a missing one is a build
		// defect that a test catches, not a runtime condition.
		panic(fmt.Sprintf("migration: embedded file %s: %v", name, err))
	}
	return string(b)
}

// Up applies every migration in order.
func Up(ctx context.Context, db Execer) error {
	for _, m := range All() {
		if _, err := db.ExecContext(ctx, m.Up); err != nil {
			return fmt.Errorf("migration: up %d %s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// Down reverts every migration, newest first.
func Down(ctx context.Context, db Execer) error {
	all := All()
	for i := len(all) - 1; i >= 0; i-- {
		m := all[i]
		if _, err := db.ExecContext(ctx, m.Down); err != nil {
			return fmt.Errorf("migration: down %d %s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// UpGORM applies every migration through db, with db's context.
func UpGORM(db *gorm.DB) error {
	for _, m := range All() {
		if err := db.Exec(m.Up).Error; err != nil {
			return fmt.Errorf("migration: up %d %s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// DownGORM reverts every migration through db, newest first.
func DownGORM(db *gorm.DB) error {
	all := All()
	for i := len(all) - 1; i >= 0; i-- {
		if err := db.Exec(all[i].Down).Error; err != nil {
			return fmt.Errorf("migration: down %d %s: %w", all[i].Version, all[i].Name, err)
		}
	}
	return nil
}

// GolangMigrate returns the migrations in golang-migrate's layout
// (NNNNNN_name.up.sql / .down.sql) at the root of the file system, for
// github.com/golang-migrate/migrate/v4/source/iofs.
func GolangMigrate() fs.FS { return sub("golang-migrate") }

// Goose returns the migrations in goose's layout (NNNNN_name.sql with
// -- +goose Up / Down annotations) at the root of the file system, for
// goose.SetBaseFS with the directory ".".
func Goose() fs.FS { return sub("goose") }

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(fmt.Sprintf("migration: %s: %v", dir, err)) // only for an invalid literal name
	}
	return f
}
