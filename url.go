package flypg

import "github.com/flypg/flypg/fly"

// URLConfig says where the app runs, for ConfigureURL.
type URLConfig struct {
	Region        string // this instance's region
	PrimaryRegion string // where the primary database lives
	Production    bool   // rewrite only in production; otherwise the URL is returned unchanged
}

// ConfigureURL rewrites a Fly Postgres connection string (DATABASE_URL)
// for the region the app runs in, so that an instance in a replica region
// reads from its local replica: the Go version of fly_postgres's
// config_repo_url, under the same name. In production the host becomes
// "top1.nearest.of.<host>" and, outside the primary region, the port 5433;
// everything else is kept byte for byte. fly.ConfigureURL, which this
// calls, gives the rules in full.
func ConfigureURL(rawURL string, cfg URLConfig) (string, error) {
	return fly.ConfigureURL(rawURL, fly.URLConfig(cfg))
}
