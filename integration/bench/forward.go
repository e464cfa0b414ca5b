package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/pgtest"
)

const benchSecret = "bench-secret-0123456789"

// benchRow is what the GORM phases create.
type benchRow struct {
	ID uint64
	V  int
}

func (benchRow) TableName() string { return "bench_rows" }

// forwardEnv is a primary with one replica, cmd/flypg-executor serving on
// loopback as a process of its own, two forwarding clients (one direct to
// the executor, one through a link that adds round-trip time), and GORM
// twice: plain on the primary, and a replica-region app with the plugin.
type forwardEnv struct {
	cluster    *pgtest.Cluster
	postmaster int // the primary's, for its CPU time
	direct     *pgxpool.Pool
	x          *executorProcess
	link       *pgtest.Link  // app to executor
	dbLink     *pgtest.Link  // app to primary, for the direct comparison
	farDB      *pgxpool.Pool // direct through dbLink
	local      *forward.Client
	far        *forward.Client

	plain, app       *gorm.DB // GORM on the primary; GORM in a replica region
	plainSQL, appSQL *sql.DB
	plug             *flypg.Plugin
}

func startForwardEnv(ctx context.Context, o options) (*forwardEnv, error) {
	c, err := pgtest.Start(ctx, pgtest.Options{Replicas: 1, Settings: map[string]string{"max_connections": "400"}})
	if err != nil {
		return nil, err
	}
	e := &forwardEnv{cluster: c}
	fail := func(err error) (*forwardEnv, error) { e.close(); return nil, err }
	cfg, err := pgxpool.ParseConfig(c.Primary.DSN(""))
	if err != nil {
		return fail(err)
	}
	cfg.MaxConns, cfg.MinConns = 64, 64
	if e.direct, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return fail(err)
	}
	if _, err := e.direct.Exec(ctx, `CREATE TABLE bench (id bigserial PRIMARY KEY, v bigint NOT NULL)`); err != nil {
		return fail(err)
	}
	// The postmaster is the parent of any backend.
	var backend int
	if err := e.direct.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return fail(err)
	}
	if e.postmaster, err = parentPID(backend); err != nil {
		return fail(err)
	}
	if e.plain, e.plainSQL, err = openPlainGORM(c.Primary.DSN("")); err != nil {
		return fail(err)
	}
	e.plainSQL.SetMaxOpenConns(64)
	e.plainSQL.SetMaxIdleConns(64)
	if err := e.plain.AutoMigrate(&benchRow{}); err != nil {
		return fail(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return fail(err)
	}
	// All 64 of the executor's connections open at once, as the direct
	// pool's do under the same load.
	if e.x, err = startExecutorProcess(ctx, executorOptions{
		dir: o.out, name: "forward", secret: benchSecret, durable: o.durableDedup,
		dsn: c.Primary.DSN("") + "&pool_min_conns=64&pool_max_conns=64",
	}); err != nil {
		return fail(err)
	}
	if e.link, err = pgtest.NewLink("app-executor", e.x.addr); err != nil {
		return fail(err)
	}
	if e.dbLink, err = pgtest.NewLink("app-primary", c.Primary.Addr()); err != nil {
		return fail(err)
	}
	fcfg, err := pgxpool.ParseConfig("postgres://postgres@" + e.dbLink.Addr() + "/postgres?sslmode=disable")
	if err != nil {
		return fail(err)
	}
	if e.farDB, err = pgxpool.NewWithConfig(ctx, fcfg); err != nil {
		return fail(err)
	}
	if e.local, err = forward.NewClient(forward.ClientConfig{Target: e.x.addr, Secret: benchSecret}); err != nil {
		return fail(err)
	}
	if e.far, err = forward.NewClient(forward.ClientConfig{Target: e.link.Addr(), Secret: benchSecret}); err != nil {
		return fail(err)
	}
	if e.app, e.appSQL, err = openPlainGORM(c.Replicas[0].DSN("")); err != nil {
		return fail(err)
	}
	e.plug = flypg.New(flypg.Config{Region: faultsReplicaRegion, PrimaryRegion: faultsPrimaryRegion, PrimaryAddr: e.x.addr, Secret: benchSecret})
	if err := e.app.Use(e.plug); err != nil {
		return fail(err)
	}
	return e, nil
}

func (e *forwardEnv) close() {
	if e.plug != nil {
		e.plug.Close()
	}
	for _, db := range []*sql.DB{e.appSQL, e.plainSQL} {
		if db != nil {
			db.Close()
		}
	}
	for _, c := range []*forward.Client{e.local, e.far} {
		if c != nil {
			c.Close()
		}
	}
	if e.farDB != nil {
		e.farDB.Close()
	}
	for _, l := range []*pgtest.Link{e.link, e.dbLink} {
		if l != nil {
			l.Close()
		}
	}
	if e.x != nil {
		e.x.stop()
	}
	if e.direct != nil {
		e.direct.Close()
	}
	e.cluster.Close()
}

// cpuTimes are the CPU times of the three processes a forwarded write
// costs: this one (the client), the executor, and the primary.
type cpuTimes struct{ client, executor, postgres time.Duration }

func (e *forwardEnv) cpu() (cpuTimes, error) {
	var t cpuTimes
	var err error
	t.client = selfCPU()
	if t.executor, err = procCPU(e.x.pid(), false); err != nil {
		return t, err
	}
	t.postgres, err = treeCPU(e.postmaster)
	return t, err
}

// measure runs f from c goroutines for d and records, under prefix, its
// rate and the CPU each process spent per call. A warm-up of a fifth of d
// first opens every path's connections: what is measured is the steady
// state, not connection set-up.
func (e *forwardEnv) measure(ctx context.Context, r results, prefix string, c int, d time.Duration, f func(context.Context, int) error) error {
	if _, _, err := throughput(ctx, c, d/5, f); err != nil {
		return err
	}
	before, err := e.cpu()
	if err != nil {
		return err
	}
	n, took, err := throughput(ctx, c, d, f)
	if err != nil {
		return err
	}
	after, err := e.cpu()
	if err != nil {
		return err
	}
	perStmt := func(a, b time.Duration) float64 { return float64((b - a).Microseconds()) / float64(n) }
	r[prefix+"tps_c64"] = float64(n) / took.Seconds()
	r[prefix+"client_cpu_us_per_stmt"] = perStmt(before.client, after.client)
	r[prefix+"executor_cpu_us_per_stmt"] = perStmt(before.executor, after.executor)
	r[prefix+"postgres_cpu_us_per_stmt"] = perStmt(before.postgres, after.postgres)
	return nil
}

// profile runs f from c goroutines for d while profiling CPU on both
// sides, then writes both sides' CPU and allocation profiles to dir as
// forward-{cpu,allocs}-{client,executor}.pb.gz.
func (e *forwardEnv) profile(ctx context.Context, dir string, c int, d time.Duration, f func(context.Context, int) error) error {
	cf, err := os.Create(filepath.Join(dir, "forward-cpu-client.pb.gz"))
	if err != nil {
		return err
	}
	defer cf.Close()
	secs := int(d / time.Second)
	type fetched struct {
		body string
		err  error
	}
	execCPU := make(chan fetched, 1)
	go func() {
		b, err := e.x.get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
		execCPU <- fetched{b, err}
	}()
	if err := pprof.StartCPUProfile(cf); err != nil {
		return err
	}
	_, _, err = throughput(ctx, c, time.Duration(secs)*time.Second, f)
	pprof.StopCPUProfile()
	got := <-execCPU
	if err != nil {
		return err
	}
	if got.err != nil {
		return fmt.Errorf("executor CPU profile: %w", got.err)
	}
	if err := os.WriteFile(filepath.Join(dir, "forward-cpu-executor.pb.gz"), []byte(got.body), 0o644); err != nil {
		return err
	}
	allocs, err := e.x.get(ctx, "/debug/pprof/allocs")
	if err != nil {
		return fmt.Errorf("executor allocation profile: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "forward-allocs-executor.pb.gz"), []byte(allocs), 0o644); err != nil {
		return err
	}
	af, err := os.Create(filepath.Join(dir, "forward-allocs-client.pb.gz"))
	if err != nil {
		return err
	}
	defer af.Close()
	return pprof.Lookup("allocs").WriteTo(af, 0)
}

const insertSQL = `INSERT INTO bench (v) VALUES ($1)`

func runForward(ctx context.Context, o options) (results, error) {
	e, err := startForwardEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	r := results{}
	n, phase := 3000, 5*time.Second
	farN := 300
	if o.quick {
		n, phase, farN = 300, time.Second, 30
	}
	local := e.local.OpenDB()
	defer local.Close()
	far := e.far.OpenDB()
	defer far.Close()
	local.SetMaxOpenConns(64)
	local.SetMaxIdleConns(64)

	directInsert := func(ctx context.Context, i int) error {
		_, err := e.direct.Exec(ctx, insertSQL, i)
		return err
	}
	sqlInsert := func(db *sql.DB) func(context.Context, int) error {
		return func(ctx context.Context, i int) error {
			_, err := db.ExecContext(ctx, insertSQL, i)
			return err
		}
	}
	// Warm up connections and statement caches on every path.
	for _, f := range []func(context.Context, int) error{directInsert, sqlInsert(local), sqlInsert(far)} {
		for i := 0; i < 20; i++ {
			if err := f(ctx, i); err != nil {
				return nil, err
			}
		}
	}

	o.logf("forward: %d sequential inserts, direct and forwarded (loopback), interleaved", n)
	direct, fwd, err := interleave(ctx, n, directInsert, sqlInsert(local))
	if err != nil {
		return nil, err
	}
	r["direct_p50_us"] = us(direct.percentile(50))
	r["forward_p50_us"] = us(fwd.percentile(50))
	r["direct_p99_us"] = us(direct.percentile(99))
	r["forward_p99_us"] = us(fwd.percentile(99))
	r["forward_ratio_p50"] = r["forward_p50_us"] / r["direct_p50_us"]

	const rtt = 10 * time.Millisecond
	for _, l := range []*pgtest.Link{e.link, e.dbLink} {
		if err := l.SetRTT(rtt); err != nil {
			return nil, err
		}
	}
	farDirect := func(ctx context.Context, i int) error {
		_, err := e.farDB.Exec(ctx, insertSQL, i)
		return err
	}
	if err := farDirect(ctx, 0); err != nil {
		return nil, err
	}
	o.logf("forward: %d inserts each way through links with %v round-trip time", farN, rtt)
	farDirectLat, farLat, err := interleave(ctx, farN, farDirect, sqlInsert(far))
	if err != nil {
		return nil, err
	}
	r["forward_rtt10_p50_us"] = us(farLat.percentile(50))
	r["direct_rtt10_p50_us"] = us(farDirectLat.percentile(50))
	// As the goal defines it: against the direct insert plus the nominal
	// 10 ms. The simulated link itself adds a little over its nominal RTT
	// (see link_overhead_us), which this ratio charges to forwarding.
	r["forward_ratio_rtt10_p50"] = r["forward_rtt10_p50_us"] / (r["direct_p50_us"] + us(rtt))
	// Against a direct insert over the same kind of link: what an app far
	// from its primary pays without flypg.
	r["forward_ratio_rtt10_same_link_p50"] = r["forward_rtt10_p50_us"] / r["direct_rtt10_p50_us"]
	r["link_overhead_us"] = r["direct_rtt10_p50_us"] - r["direct_p50_us"] - us(rtt)
	r["rtt_ms"] = ms(rtt)

	o.logf("forward: throughput with 64 clients for %v each, CPU per statement from each process's accounting", phase)
	if err := e.measure(ctx, r, "direct_", 64, phase, directInsert); err != nil {
		return nil, err
	}
	if err := e.measure(ctx, r, "", 64, phase, sqlInsert(local)); err != nil {
		return nil, err
	}
	r["forward_tps_c64"] = r["tps_c64"]
	delete(r, "tps_c64")
	delete(r, "direct_executor_cpu_us_per_stmt")
	r["forward_tps_ratio_c64"] = r["forward_tps_c64"] / r["direct_tps_c64"]

	// GORM's Create with its implicit transaction: plain on the primary,
	// and from a replica-region app through the plugin (not waiting for
	// replication, which is not what this measures).
	gormCreate := func(db *gorm.DB) func(context.Context, int) error {
		return func(ctx context.Context, i int) error {
			return db.WithContext(ctx).Create(&benchRow{V: i}).Error
		}
	}
	noAwait := fly.NoAwait(ctx)
	for _, f := range []func(context.Context, int) error{gormCreate(e.plain), gormCreate(e.app)} {
		for i := 0; i < 20; i++ {
			if err := f(noAwait, i); err != nil {
				return nil, err
			}
		}
	}
	o.logf("forward: GORM Create with 64 clients for %v each", phase)
	if err := e.measure(noAwait, r, "gorm_direct_", 64, phase, gormCreate(e.plain)); err != nil {
		return nil, err
	}
	delete(r, "gorm_direct_executor_cpu_us_per_stmt")
	if err := e.measure(noAwait, r, "gorm_", 64, phase, gormCreate(e.app)); err != nil {
		return nil, err
	}
	r["gorm_forward_tps_c64"] = r["gorm_tps_c64"]
	delete(r, "gorm_tps_c64")
	r["gorm_tps_ratio_c64"] = r["gorm_forward_tps_c64"] / r["gorm_direct_tps_c64"]

	o.logf("forward: profiles of both sides over %v of forwarded inserts", phase)
	if err := e.profile(ctx, o.out, 64, phase, sqlInsert(local)); err != nil {
		return nil, err
	}

	// Round trips of a database/sql transaction: BEGIN + INSERT + COMMIT.
	rctx, rcpt := forward.WithReceipt(ctx)
	tx, err := local.BeginTx(rctx, nil)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(rctx, insertSQL, 1); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	r["rpcs_per_tx_insert"] = float64(rcpt.RPCs())
	return r, nil
}

// interleave alternates a and b n times each, so that both see the same
// machine state, and returns their latencies.
func interleave(ctx context.Context, n int, a, b func(context.Context, int) error) (sample, sample, error) {
	var sa, sb sample
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := a(ctx, i); err != nil {
			return nil, nil, err
		}
		t1 := time.Now()
		if err := b(ctx, i); err != nil {
			return nil, nil, err
		}
		sa = append(sa, t1.Sub(t0))
		sb = append(sb, time.Since(t1))
	}
	return sa, sb, nil
}

func sequential(ctx context.Context, n int, f func(context.Context, int) error) (sample, error) {
	var s sample
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := f(ctx, i); err != nil {
			return nil, err
		}
		s = append(s, time.Since(t0))
	}
	return s, nil
}

// throughput runs f from c goroutines for d and returns how many calls
// completed and in how long.
func throughput(ctx context.Context, c int, d time.Duration, f func(context.Context, int) error) (int64, time.Duration, error) {
	var (
		done  atomic.Int64
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	start := time.Now()
	stop := start.Add(d)
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if err := f(ctx, i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return 0, 0, *p
	}
	return done.Load(), time.Since(start), nil
}

func forwardGoals(r results) []goal {
	return []goal{
		{"forward_tps_ratio_c64 >= 0.7 (executor in its own process)", format(r["forward_tps_ratio_c64"]), r["forward_tps_ratio_c64"] >= 0.7},
		{"executor_cpu_us_per_stmt <= postgres_cpu_us_per_stmt", format(r["executor_cpu_us_per_stmt"]) + " vs " + format(r["postgres_cpu_us_per_stmt"]), r["executor_cpu_us_per_stmt"] <= r["postgres_cpu_us_per_stmt"]},
		{"client_cpu_us_per_stmt <= 15", format(r["client_cpu_us_per_stmt"]), r["client_cpu_us_per_stmt"] <= 15},
		{"forward_ratio_p50 (loopback) <= 1.6", format(r["forward_ratio_p50"]), r["forward_ratio_p50"] <= 1.6},
		{"forward_ratio_rtt10_p50 <= 1.03", format(r["forward_ratio_rtt10_p50"]), r["forward_ratio_rtt10_p50"] <= 1.03},
		{"rpcs_per_tx_insert 1-2", format(r["rpcs_per_tx_insert"]), r["rpcs_per_tx_insert"] >= 1 && r["rpcs_per_tx_insert"] <= 2},
	}
}
