// Package fly holds the Fly.io conventions of a multi-region deployment:
// its region facts, the context markers that change how flypg treats one
// call, and the rewriting of a Fly Postgres connection string for the
// instance's region.
//
// Region facts come from the environment and are read on every call, so a
// process needs no set-up and tests can change them with t.Setenv:
//
//   - Region: FLY_REGION, then MY_REGION, else "local";
//   - PrimaryRegion: PRIMARY_REGION, else "local";
//   - IsPrimary: Region() == PrimaryRegion().
//
// With nothing set both regions are "local", so local development runs as the
// primary region and nothing is forwarded.
//
// The context markers are read by flypg's GORM callbacks:
//
//	db.WithContext(fly.NoAwait(ctx)).Create(&u)              // forward, do not wait for replication
//	db.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&User{}) // no forwarding at all
//
// ConfigureURL rewrites DATABASE_URL as fly_postgres's config_repo_url
// did, so that an instance in a replica region reads from its local replica
// ("top1.nearest.of." host, port 5433); flypg.ConfigureURL is the same
// function under the original's root name.
//
// Package fly imports nothing of flypg's; any package may depend on it.
package fly
