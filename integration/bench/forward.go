package main

import (
	"context"
	"database/sql"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/pgtest"
)

const benchSecret = "bench-secret-0123456789"

// forwardEnv is a primary, an executor serving on loopback, and two
// forwarding clients: one direct to the executor, one through a link that
// adds round-trip time.
type forwardEnv struct {
	cluster *pgtest.Cluster
	direct  *pgxpool.Pool
	exec    *forward.Executor
	link    *pgtest.Link  // app to executor
	dbLink  *pgtest.Link  // app to primary, for the direct comparison
	farDB   *pgxpool.Pool // direct through dbLink
	local   *forward.Client
	far     *forward.Client
	serve   chan error
}

func startForwardEnv(ctx context.Context, durable bool) (*forwardEnv, error) {
	c, err := pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"max_connections": "300"}})
	if err != nil {
		return nil, err
	}
	e := &forwardEnv{cluster: c}
	fail := func(err error) (*forwardEnv, error) { e.close(); return nil, err }
	cfg, err := pgxpool.ParseConfig(c.Primary.DSN(""))
	if err != nil {
		return fail(err)
	}
	cfg.MaxConns = 64
	if e.direct, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return fail(err)
	}
	if _, err := e.direct.Exec(ctx, `CREATE TABLE bench (id bigserial PRIMARY KEY, v bigint NOT NULL)`); err != nil {
		return fail(err)
	}
	pc, err := forward.PoolConfig(c.Primary.DSN(""))
	if err != nil {
		return fail(err)
	}
	pc.MaxConns = 64
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fail(err)
	}
	if e.exec, err = forward.NewExecutor(ctx, forward.ExecutorConfig{Pool: pool, Secret: benchSecret, DurableDedup: durable}); err != nil {
		pool.Close()
		return fail(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	e.serve = make(chan error, 1)
	go func() { e.serve <- e.exec.Serve(lis); pool.Close() }()
	if e.link, err = pgtest.NewLink("app-executor", lis.Addr().String()); err != nil {
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
	if e.local, err = forward.NewClient(forward.ClientConfig{Target: lis.Addr().String(), Secret: benchSecret}); err != nil {
		return fail(err)
	}
	if e.far, err = forward.NewClient(forward.ClientConfig{Target: e.link.Addr(), Secret: benchSecret}); err != nil {
		return fail(err)
	}
	return e, nil
}

func (e *forwardEnv) close() {
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
	if e.exec != nil {
		e.exec.Close()
		<-e.serve
	}
	if e.direct != nil {
		e.direct.Close()
	}
	e.cluster.Close()
}

const insertSQL = `INSERT INTO bench (v) VALUES ($1)`

func runForward(ctx context.Context, o options) (results, error) {
	e, err := startForwardEnv(ctx, o.durableDedup)
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

	o.logf("forward: throughput with 64 clients for %v each", phase)
	if r["direct_tps_c64"], err = throughput(ctx, 64, phase, directInsert); err != nil {
		return nil, err
	}
	if r["forward_tps_c64"], err = throughput(ctx, 64, phase, sqlInsert(local)); err != nil {
		return nil, err
	}
	r["forward_tps_ratio_c64"] = r["forward_tps_c64"] / r["direct_tps_c64"]

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

// throughput runs f from c goroutines for d and returns calls per second.
func throughput(ctx context.Context, c int, d time.Duration, f func(context.Context, int) error) (float64, error) {
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
		return 0, *p
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

func forwardGoals(r results) []goal {
	return []goal{
		{"forward_ratio_rtt10_p50 <= 1.05", format(r["forward_ratio_rtt10_p50"]), r["forward_ratio_rtt10_p50"] <= 1.05},
		{"forward_tps_ratio_c64 >= 0.7", format(r["forward_tps_ratio_c64"]), r["forward_tps_ratio_c64"] >= 0.7},
		{"rpcs_per_tx_insert <= 2", format(r["rpcs_per_tx_insert"]), r["rpcs_per_tx_insert"] <= 2},
		{"forward_ratio_p50 (loopback) measured; aim < 3", format(r["forward_ratio_p50"]), true},
	}
}
