// Package integration proves the flypg plugin against a realistic GORM model
// set on a real PostgreSQL primary with a streaming replica.
//
// One cluster serves the whole package (TestMain); every test gets fresh
// PostgreSQL databases of its own, so tests run in parallel without seeing
// each other's rows. Tests that break replication start a cluster of their
// own.
package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

const (
	primaryRegion = "iad"
	replicaRegion = "syd"
)

// replicationDelay is the one-way latency of the shared cluster's
// replication stream.
const replicationDelay = 20 * time.Millisecond

var (
	// shared is the package's cluster: a primary and one replica whose
	// replication goes through a Link with latency.
	shared *pgtest.Cluster
	// skipReason is set when PostgreSQL is not installed (outside CI).
	skipReason string
	dbSeq      atomic.Int64
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgtest.Start(ctx, pgtest.Options{Replicas: 1, ReplicationLinks: true})
	cancel()
	switch {
	case errors.Is(err, pgtest.ErrNoPostgres):
		if os.Getenv("CI") == "true" {
			// CI must never skip silently.
			fmt.Fprintf(os.Stderr, "integration: PostgreSQL is required in CI: %v\n", err)
			return 1
		}
		skipReason = fmt.Sprintf("pgtest: skipping: %v", err)
	case err != nil:
		fmt.Fprintf(os.Stderr, "integration: start cluster: %v\n", err)
		return 1
	default:
		shared = c
		// Replication lags by replicationDelay, as between regions, so
		// that a read right after a write that was not awaited misses it:
		// read-your-writes assertions then prove the wait.
		if err := c.ReplicationLink(0).SetRTT(2 * replicationDelay); err != nil {
			fmt.Fprintf(os.Stderr, "integration: replication latency: %v\n", err)
			c.Close()
			return 1
		}
	}
	code := m.Run()
	if shared != nil {
		if err := shared.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: close cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if code == 0 {
		// Every test closes what it opened (handles, plugins, executors,
		// clusters), so nothing of ours may outlive the tests.
		if err := goleak.Find(
			// GORM's PrepareStmt cache (gorm.io/gorm/internal/lru) starts
			// an expiry goroutine per *gorm.DB whose done channel GORM
			// never closes (see the comment in lru.go): a known GORM leak,
			// not ours. TestGORMConfigs opens handles with PrepareStmt.
			goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "integration: goroutine leak: %v\n", err)
			return 1
		}
	}
	return code
}

// env is one test's view of a two-region deployment on one database.
type env struct {
	t       *testing.T
	cluster *pgtest.Cluster
	dbname  string

	primary *gorm.DB // primary-region app: plugin with Region == PrimaryRegion
	replica *gorm.DB // replica-region app: reads local, writes forwarded
	plain   *gorm.DB // plain GORM on the primary, no plugin

	pPlug, rPlug *flypg.Plugin
	addr         string // the executor's loopback address

	gormOpts func(*gorm.Config) // envConfig.gorm
}

type envConfig struct {
	cluster      *pgtest.Cluster // default: the shared cluster
	awaitTimeout time.Duration   // replica plugin's AwaitTimeout; default 10s
	models       []any           // default: allModels()
	// gorm adjusts the GORM configuration of the replica-region handle
	// (and of the reference database runCompared compares it with).
	gorm func(*gorm.Config)
	// plugins adjusts the two plugins' configurations.
	plugins func(primary, replica *flypg.Config)
}

func requireCluster(t testing.TB) *pgtest.Cluster {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if shared == nil {
		t.Fatal("integration: no cluster")
	}
	return shared
}

// ownCluster starts a cluster of the test's own, for a test that breaks
// replication or the primary; it needs PostgreSQL as requireCluster does.
func ownCluster(t testing.TB, opts pgtest.Options) *pgtest.Cluster {
	t.Helper()
	requireCluster(t)
	return pgtest.StartT(t, opts)
}

// waitReplicated waits until c's replicas have replayed everything the
// primary wrote so far.
func waitReplicated(t testing.TB, c *pgtest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
}

func gormConfig() *gorm.Config {
	return &gorm.Config{Logger: logger.Discard, TranslateError: true}
}

// openGORM opens a GORM handle on dsn, closed when the test ends; opts, if
// set, adjust its configuration.
func openGORM(t testing.TB, dsn string, opts ...func(*gorm.Config)) *gorm.DB {
	t.Helper()
	cfg := gormConfig()
	for _, o := range opts {
		if o != nil {
			o(cfg)
		}
	}
	db, err := gorm.Open(postgres.Open(dsn), cfg)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() {
		if s, err := db.DB(); err == nil {
			s.Close()
		}
	})
	return db
}

// createDatabase creates a fresh database on c's primary and waits until
// the replicas have it.
func createDatabase(t testing.TB, c *pgtest.Cluster, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d", prefix, dbSeq.Add(1))
	admin, err := gorm.Open(postgres.Open(c.Primary.DSN("")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := admin.DB()
	defer sqlDB.Close()
	if err := admin.Exec("CREATE DATABASE " + name).Error; err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatalf("database %s not replicated: %v", name, err)
	}
	return name
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envConfig{}) }

// newEnvWith builds the three handles on a fresh database: the primary-region
// app serving the executor on a loopback listener, the replica-region app
// forwarding to it, and plain GORM on the primary; then migrates the models
// in the primary region with fly.Local.
func newEnvWith(t *testing.T, cfg envConfig) *env {
	t.Helper()
	c := clusterOr(t, cfg.cluster)
	if cfg.awaitTimeout == 0 {
		cfg.awaitTimeout = 10 * time.Second
	}
	if cfg.models == nil {
		cfg.models = allModels()
	}
	e := &env{t: t, cluster: c, gormOpts: cfg.gorm}
	e.dbname = createDatabase(t, c, strings.ToLower(safeName(t.Name())))

	rcfg := flypg.Config{
		Region: replicaRegion, PrimaryRegion: primaryRegion, Secret: testkit.Secret,
		AwaitTimeout: cfg.awaitTimeout,
	}
	e.primary, e.pPlug, e.addr = servePrimary(t, c.Primary.DSN(e.dbname), func(pcfg *flypg.Config) {
		if cfg.plugins != nil {
			cfg.plugins(pcfg, &rcfg)
		}
	})

	e.replica = openGORM(t, c.Replicas[0].DSN(e.dbname), cfg.gorm)
	rcfg.PrimaryAddr = e.addr
	e.rPlug = flypg.New(rcfg)
	if err := e.replica.Use(e.rPlug); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rPlug.Close() })

	e.plain = openGORM(t, c.Primary.DSN(e.dbname))

	local := e.primary.Session(&gorm.Session{Context: fly.Local(context.Background())})
	if err := local.AutoMigrate(cfg.models...); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e.waitReplicated()
	return e
}

// clusterOr returns c, or the package's shared cluster when c is nil.
func clusterOr(t testing.TB, c *pgtest.Cluster) *pgtest.Cluster {
	t.Helper()
	if c == nil {
		return requireCluster(t)
	}
	return c
}

// servePrimary opens the primary-region app on dsn and serves its executor
// on a loopback listener until the test ends; opts adjust its plugin's
// configuration.
func servePrimary(t testing.TB, dsn string, opts ...func(*flypg.Config)) (*gorm.DB, *flypg.Plugin, string) {
	t.Helper()
	db := openGORM(t, dsn)
	cfg := flypg.Config{Region: primaryRegion, PrimaryRegion: primaryRegion, Secret: testkit.Secret}
	for _, o := range opts {
		o(&cfg)
	}
	plug := flypg.New(cfg)
	if err := db.Use(plug); err != nil {
		t.Fatal(err)
	}
	return db, plug, testkit.Serve(t, plug)
}

func (e *env) waitReplicated() {
	e.t.Helper()
	waitReplicated(e.t, e.cluster)
}

// newPlainDB returns plain GORM (no plugin) on a fresh, migrated database
// of the shared cluster's primary: the reference a scenario is compared
// against.
func newPlainDB(t *testing.T, opts ...func(*gorm.Config)) *gorm.DB {
	t.Helper()
	c := requireCluster(t)
	name := createDatabase(t, c, "ref_"+strings.ToLower(safeName(t.Name())))
	db := openGORM(t, c.Primary.DSN(name), opts...)
	if err := db.AutoMigrate(allModels()...); err != nil {
		t.Fatalf("migrate reference database: %v", err)
	}
	return db
}

// safeName makes a test name usable in a database name (at most 63 bytes
// with its suffix).
func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 40 {
		out = out[:40]
	}
	return out
}

// stats returns the replica plugin's counters.
func (e *env) stats() flypg.Stats { return e.rPlug.Stats() }

// counted runs fn and returns how many round trips to the executor and how
// many replication waits it caused on the replica plugin.
func (e *env) counted(fn func()) (rpcs, waits uint64) {
	e.t.Helper()
	before := e.stats()
	fn()
	after := e.stats()
	return after.Forward.RPCs - before.Forward.RPCs, after.Tracker.Waits - before.Tracker.Waits
}

// ok fails the test now when the GORM call failed.
func ok(t testing.TB, tx *gorm.DB) *gorm.DB {
	t.Helper()
	if tx.Error != nil {
		t.Fatalf("unexpected error: %v", tx.Error)
	}
	return tx
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// sqlState returns the SQLSTATE of a PostgreSQL error in err's chain.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// inRecovery reports pg_is_in_recovery() where db runs the statement: true
// on the replica, false on the primary.
func inRecovery(t testing.TB, db *gorm.DB) bool {
	t.Helper()
	var b bool
	ok(t, db.Raw("SELECT pg_is_in_recovery()").Scan(&b))
	return b
}

// countRows counts rows of table matching where on db.
func countRows(t testing.TB, db *gorm.DB, table, where string, args ...any) int64 {
	t.Helper()
	var n int64
	q := db.Table(table)
	if where != "" {
		q = q.Where(where, args...)
	}
	ok(t, q.Count(&n))
	return n
}
