package forward_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pgx pools and database/sql close their connections in the
		// background; the cluster processes are not goroutines.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// env is a primary + replica, an executor on the primary serving on
// loopback, a client, and pools for checking what happened.
type env struct {
	cluster *pgtest.Cluster
	exec    *executor.Executor
	addr    string
	client  *forward.Client
	db      *sql.DB       // forwarding pool
	primary *pgxpool.Pool // direct, for checks
	replica *sql.DB       // direct, for read-your-writes checks
	tracker *lsn.Tracker
}

type envOption func(*executor.Config, *forward.ClientConfig)

func startEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	c := pgtest.StartT(t, pgtest.Options{Replicas: 1})
	e := &env{cluster: c}
	ctx := context.Background()
	var err error
	if e.primary, err = pgxpool.New(ctx, c.Primary.DSN("")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.primary.Close)
	if e.replica, err = sql.Open("pgx", c.Replicas[0].DSN("")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.replica.Close() })

	xcfg := executor.Config{DSN: c.Primary.DSN(""), Secret: testkit.Secret, HealthInterval: 100 * time.Millisecond}
	ccfg := forward.ClientConfig{Secret: testkit.Secret, Timeout: 5 * time.Second}
	for _, o := range opts {
		o(&xcfg, &ccfg)
	}
	e.startExecutor(t, xcfg)
	ccfg.Target = e.addr
	e.client, e.db = openClient(t, ccfg)

	src := lsn.NewReplaySource(e.replica)
	if e.tracker, err = lsn.NewTracker(lsn.Config{Source: src, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.tracker.Close(); src.Close() })

	if _, err := e.primary.Exec(ctx, `CREATE TABLE items (id bigserial PRIMARY KEY, name text UNIQUE NOT NULL, qty int NOT NULL DEFAULT 0)`); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) startExecutor(t testing.TB, cfg executor.Config) {
	t.Helper()
	e.exec, e.addr = serveExecutor(t, cfg)
}

// serveExecutor starts an executor of cfg serving on loopback until the
// test ends.
func serveExecutor(t testing.TB, cfg executor.Config) (*executor.Executor, string) {
	t.Helper()
	x, err := executor.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x, testkit.Serve(t, x)
}

// openClient opens a forwarding pool on a client of cfg (Target set),
// both closed when the test ends.
func openClient(t testing.TB, cfg forward.ClientConfig) (*forward.Client, *sql.DB) {
	t.Helper()
	c, err := forward.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	db := c.OpenDB()
	t.Cleanup(func() { db.Close() })
	return c, db
}

func (e *env) count(t testing.TB, where string, args ...any) int {
	t.Helper()
	var n int
	if err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM items WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// countErr counts rows of items, for goroutines (which must not t.Fatal).
func (e *env) countErr(where string, args ...any) (int, error) {
	var n int
	err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM items WHERE `+where, args...).Scan(&n)
	return n, err
}

// idleInTransaction counts the primary's connections idle in a
// transaction.
func (e *env) idleInTransaction(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitCommitted waits, on its own goroutine, until a row named name is on
// the primary, then runs then; the channel gets the outcome.
func (e *env) waitCommitted(name string, then func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		var err error
		committed := testkit.Poll(10*time.Second, func() bool {
			var n int
			n, err = e.countErr("name = $1", name)
			return err != nil || n > 0
		})
		switch {
		case err != nil:
			done <- err
		case !committed:
			done <- fmt.Errorf("%s never committed", name)
		default:
			done <- then()
		}
	}()
	return done
}
