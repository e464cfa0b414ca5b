// Package migration holds the SQL that flypg's optional parts need in the
// database, as embedded files usable four ways:
//
//   - from Go with database/sql: migration.Up(ctx, db);
//   - from Go with GORM: migration.UpGORM(db);
//   - with golang-migrate: the files under golang-migrate/ (source
//     iofs.New(migration.GolangMigrate(), "."), or copy them);
//   - with goose: the files under goose/ (goose.SetBaseFS(migration.Goose())).
//
// Today there is one migration: the watch_for_lsn_change function of the
// original fly_postgres, used by lsn.WatchSource. flypg's default tracker
// (lsn.ReplaySource) needs no migration at all; install the function when
// comparing the two approaches or when sharing a database with an app on
// the original library.
//
// Every statement is idempotent (CREATE OR REPLACE, DROP ... IF EXISTS), so
// applying twice is harmless. Apply it on the primary: replicas are read-only
// and receive the function through replication. In a replica region, run it
// with fly.Local on a connection to the primary, or through the plugin.
package migration
