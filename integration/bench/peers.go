package main

// The peers suite puts flypg next to what a GORM app in a replica region
// would otherwise do, on one primary + replica with every cross-region link
// given the same added round-trip time:
//
//   - direct: every statement goes to the far primary (a single-region app
//     deployed far from its database);
//   - dbresolver: gorm.io/plugin/dbresolver, writes to the far primary and
//     reads from the local replica, with no wait for replication;
//   - flypg: GORM on the local replica with the flypg plugin forwarding
//     writes to an executor in the primary region and waiting for replay.

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/plugin/dbresolver"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/pgtest"
)

const (
	peersSecret        = "peers-bench-secret-0123456789"
	peersClients       = 64 // concurrent clients of the throughput phase
	peersPageReads     = 10 // reads of a page, after its one write
	peersTransfer      = "peers.transfer"
	peersStartBalance  = 1000
	peersPrimaryRegion = "iad"
	peersReplicaRegion = "syd"
)

// Configuration names, as they appear in the metric names.
const (
	cfgDirect   = "direct"
	cfgResolver = "dbresolver"
	cfgFlypg    = "flypg"
)

// peerNote is the small model every write creates.
type peerNote struct {
	ID    uint64
	Owner int64 `gorm:"index"`
	Body  string
}

func (peerNote) TableName() string { return "peer_notes" }

// peerAccount is what the tx5 transaction moves money between.
type peerAccount struct {
	ID      int64
	Balance int64
}

func (peerAccount) TableName() string { return "peer_accounts" }

// peersPlan sizes one run: how many cycles each workload interleaves, and
// how many of them the direct configuration joins. Direct is the slowest
// path by far and reads the primary, so it cannot be stale: fewer samples
// give its latency and keep the suite within its time budget.
type peersPlan struct {
	write, page, tx5 workloadPlan
	warm             int           // untimed cycles per configuration first
	phase, warmPhase time.Duration // throughput: measured, and untimed before it
}

type workloadPlan struct{ cycles, direct int }

// every is the stride at which direct joins the cycles.
func (w workloadPlan) every() int { return max(1, w.cycles/max(1, w.direct)) }

func peersPlanFor(quick bool) peersPlan {
	if quick {
		return peersPlan{
			write: workloadPlan{100, 20}, page: workloadPlan{30, 6}, tx5: workloadPlan{30, 10},
			warm: 5, phase: time.Second, warmPhase: time.Second,
		}
	}
	// About 3.5 minutes on 2 cores at the default 20 ms; the time grows
	// with -rtt.
	return peersPlan{
		write: workloadPlan{1000, 200}, page: workloadPlan{200, 100}, tx5: workloadPlan{300, 100},
		warm: 20, phase: 5 * time.Second, warmPhase: 2 * time.Second,
	}
}

// peersEnv is the two-region deployment: the cluster, the links that stand
// for the distance, and the replica-region app in its three configurations.
type peersEnv struct {
	cluster  *pgtest.Cluster
	execLink *pgtest.Link // replica region to the primary region's executor
	admin    *gorm.DB     // primary region, plain: schema and seed data
	rPlug    *flypg.Plugin

	dbs     map[string]*gorm.DB // the replica-region app, per configuration
	cleanup []func()            // run last first by close, like t.Cleanup

	seq   atomic.Int64 // note owners: fresh rows every cycle
	pairs atomic.Int64 // account pairs handed out to tx5 cycles
	nAcct int64

	mu        sync.Mutex
	recording bool
	events    []flypg.WriteEvent // flypg's forwarded writes while recording
}

func startPeersEnv(ctx context.Context, o options, plan peersPlan) (*peersEnv, error) {
	c, err := pgtest.Start(ctx, pgtest.Options{
		Replicas: 1, ReplicationLinks: true,
		Settings: map[string]string{"max_connections": "300"},
	})
	if err != nil {
		return nil, err
	}
	e := &peersEnv{cluster: c, dbs: map[string]*gorm.DB{}}
	fail := func(err error) (*peersEnv, error) { e.close(); return nil, err }
	if e.admin, err = e.openGORM(c.Primary.DSN("")); err != nil {
		return fail(err)
	}
	// Two accounts per tx5 cycle of either configuration, warm-up included.
	e.nAcct = int64(2 * (plan.tx5.cycles + plan.tx5.direct + 2*plan.warm))
	if err := e.migrate(ctx); err != nil {
		return fail(err)
	}
	if err := e.startPrimaryRegion(c.Primary.DSN("")); err != nil {
		return fail(fmt.Errorf("primary region: %w", err))
	}
	dbLink, err := e.link("syd-primary", c.Primary.Addr())
	if err != nil {
		return fail(err)
	}
	farDSN := "postgres://postgres@" + dbLink.Addr() + "/postgres?sslmode=disable"
	if e.dbs[cfgDirect], err = e.openGORM(farDSN); err != nil {
		return fail(fmt.Errorf("direct: %w", err))
	}
	if e.dbs[cfgResolver], err = e.openResolver(farDSN, c.Replicas[0].DSN("")); err != nil {
		return fail(fmt.Errorf("dbresolver: %w", err))
	}
	if e.dbs[cfgFlypg], err = e.openFlypg(c.Replicas[0].DSN("")); err != nil {
		return fail(fmt.Errorf("flypg: %w", err))
	}
	for _, l := range []*pgtest.Link{dbLink, e.execLink, c.ReplicationLink(0)} {
		if err := l.SetRTT(o.rtt); err != nil {
			return fail(fmt.Errorf("link %s: %w", l.Name(), err))
		}
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return fail(err)
	}
	return e, nil
}

// onClose registers f to run at close, before whatever was registered
// earlier: handles close before what they depend on.
func (e *peersEnv) onClose(f func()) { e.cleanup = append(e.cleanup, f) }

func (e *peersEnv) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
	e.cleanup = nil
	e.cluster.Close()
}

// link starts a simulated cross-region link to upstream.
func (e *peersEnv) link(name, upstream string) (*pgtest.Link, error) {
	l, err := pgtest.NewLink(name, upstream)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	e.onClose(func() { l.Close() })
	return l, nil
}

// openGORM opens GORM with its default configuration (default transaction
// on) and no logging, closed at close. Idle connections are kept for every
// client of the throughput phase: database/sql's default of 2 would reopen
// connections across the link all the time, charging connection set-up to
// the direct path.
func (e *peersEnv) openGORM(dsn string) (*gorm.DB, error) {
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dsn, err)
	}
	s, err := db.DB()
	if err != nil {
		return nil, err
	}
	e.onClose(func() { s.Close() })
	s.SetMaxIdleConns(peersClients)
	return db, nil
}

// migrate creates the tables and the accounts in the primary region.
func (e *peersEnv) migrate(ctx context.Context) error {
	db := e.admin.WithContext(ctx)
	if err := db.AutoMigrate(&peerNote{}, &peerAccount{}); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	accts := make([]peerAccount, e.nAcct)
	for i := range accts {
		accts[i] = peerAccount{ID: int64(i + 1), Balance: peersStartBalance}
	}
	if err := db.CreateInBatches(accts, 1000).Error; err != nil {
		return fmt.Errorf("seed accounts: %w", err)
	}
	return nil
}

// startPrimaryRegion runs the primary-region instance of the app: GORM on
// the primary with the flypg plugin, serving the executor on loopback
// behind execLink.
func (e *peersEnv) startPrimaryRegion(dsn string) error {
	db, err := e.openGORM(dsn)
	if err != nil {
		return err
	}
	p := flypg.New(flypg.Config{
		Region: peersPrimaryRegion, PrimaryRegion: peersPrimaryRegion, Secret: peersSecret,
		// As many primary connections as the direct configuration may use,
		// so that the c64 phase compares paths, not pool sizes.
		PrimaryDSN: dsn + fmt.Sprintf("&pool_max_conns=%d", peersClients),
	})
	e.onClose(func() { p.Close() })
	if err := db.Use(p); err != nil {
		return err
	}
	if _, err := flypg.Register(p, peersTransfer, transferFunc); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(lis) }()
	// Serve returns once the plugin is closed.
	e.onClose(func() { p.Close(); <-served })
	e.execLink, err = e.link("syd-executor", lis.Addr().String())
	return err
}

// openResolver is the dbresolver configuration: the far primary as source
// (the handle's own connection) and the local replica as replica.
func (e *peersEnv) openResolver(farDSN, replicaDSN string) (*gorm.DB, error) {
	db, err := e.openGORM(farDSN)
	if err != nil {
		return nil, err
	}
	// Opened here rather than by dbresolver, which would not close it.
	replica, err := sql.Open("pgx", replicaDSN)
	if err != nil {
		return nil, err
	}
	e.onClose(func() { replica.Close() })
	replica.SetMaxIdleConns(peersClients)
	err = db.Use(dbresolver.Register(dbresolver.Config{
		Replicas: []gorm.Dialector{postgres.New(postgres.Config{Conn: replica})},
	}))
	return db, err
}

// openFlypg is the flypg configuration: GORM on the local replica, writes
// forwarded through execLink.
func (e *peersEnv) openFlypg(replicaDSN string) (*gorm.DB, error) {
	db, err := e.openGORM(replicaDSN)
	if err != nil {
		return nil, err
	}
	e.rPlug = flypg.New(flypg.Config{
		Region: peersReplicaRegion, PrimaryRegion: peersPrimaryRegion,
		PrimaryAddr: e.execLink.Addr(), Secret: peersSecret,
		OnWrite: e.record,
	})
	e.onClose(func() { e.rPlug.Close() })
	if err := db.Use(e.rPlug); err != nil {
		return nil, err
	}
	// Functions are registered on every node, as an app would.
	_, err = flypg.Register(e.rPlug, peersTransfer, transferFunc)
	return db, err
}

// record keeps flypg's forwarded writes while a latency phase runs, to
// split their time into forwarding and waiting for replay.
func (e *peersEnv) record(_ context.Context, ev flypg.WriteEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.recording {
		e.events = append(e.events, ev)
	}
}

// recordEvents starts recording; the returned function stops and returns
// what was recorded.
func (e *peersEnv) recordEvents() func() []flypg.WriteEvent {
	e.mu.Lock()
	e.recording, e.events = true, nil
	e.mu.Unlock()
	return func() []flypg.WriteEvent {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.recording = false
		return e.events
	}
}

// write creates a fresh note, timing the Create alone, then reads it back
// as the app's next request would; stale reports a read-back that missed
// the write.
func (e *peersEnv) write(ctx context.Context, db *gorm.DB) (time.Duration, bool, error) {
	db = db.WithContext(ctx)
	n := peerNote{Owner: e.seq.Add(1), Body: "hello from " + peersReplicaRegion}
	t0 := time.Now()
	if err := db.Create(&n).Error; err != nil {
		return 0, false, fmt.Errorf("create: %w", err)
	}
	d := time.Since(t0)
	seen, err := noteVisible(db, n.ID)
	return d, !seen, err
}

// page is one request of a typical page: a write, then reads that must
// show it (by key and in a listing). It is timed whole; stale reports a
// page where any read missed the write.
func (e *peersEnv) page(ctx context.Context, db *gorm.DB) (time.Duration, bool, error) {
	db = db.WithContext(ctx)
	t0 := time.Now()
	n := peerNote{Owner: e.seq.Add(1), Body: "page"}
	if err := db.Create(&n).Error; err != nil {
		return 0, false, fmt.Errorf("create: %w", err)
	}
	stale := false
	for i := 0; i < peersPageReads; i++ {
		var seen bool
		var err error
		if i%2 == 0 {
			seen, err = noteVisible(db, n.ID)
		} else {
			seen, err = ownerListed(db, n.Owner)
		}
		if err != nil {
			return 0, false, fmt.Errorf("read %d: %w", i, err)
		}
		stale = stale || !seen
	}
	return time.Since(t0), stale, nil
}

func noteVisible(db *gorm.DB, id uint64) (bool, error) {
	var got []peerNote
	err := db.Where("id = ?", id).Limit(1).Find(&got).Error
	return len(got) == 1, err
}

func ownerListed(db *gorm.DB, owner int64) (bool, error) {
	var got []peerNote
	err := db.Where("owner = ?", owner).Order("id DESC").Limit(20).Find(&got).Error
	return len(got) == 1, err
}

// transferIn and transferOut are the tx5 function's input and output.
type transferIn struct{ From, To, Amount int64 }

type transferOut struct {
	NoteID    uint64
	ToBalance int64
}

// transfer is the 5-statement transaction, the same code for every
// configuration: read a row, update two, insert one, read one back.
func transfer(tx *gorm.DB, in transferIn) (transferOut, error) {
	var from peerAccount
	if err := tx.Take(&from, in.From).Error; err != nil {
		return transferOut{}, fmt.Errorf("read %d: %w", in.From, err)
	}
	if from.Balance < in.Amount {
		return transferOut{}, fmt.Errorf("account %d: balance %d < %d", in.From, from.Balance, in.Amount)
	}
	if err := move(tx, in.From, -in.Amount); err != nil {
		return transferOut{}, err
	}
	if err := move(tx, in.To, in.Amount); err != nil {
		return transferOut{}, err
	}
	n := peerNote{Owner: in.To, Body: "transfer"}
	if err := tx.Create(&n).Error; err != nil {
		return transferOut{}, fmt.Errorf("insert note: %w", err)
	}
	var to peerAccount
	if err := tx.Take(&to, in.To).Error; err != nil {
		return transferOut{}, fmt.Errorf("read %d: %w", in.To, err)
	}
	return transferOut{NoteID: n.ID, ToBalance: to.Balance}, nil
}

func move(tx *gorm.DB, id, amount int64) error {
	err := tx.Model(&peerAccount{}).Where("id = ?", id).Update("balance", gorm.Expr("balance + ?", amount)).Error
	if err != nil {
		return fmt.Errorf("update %d: %w", id, err)
	}
	return nil
}

// transferFunc is transfer as a flypg function, run by the executor's node
// on the primary.
func transferFunc(_ context.Context, tx *gorm.DB, in transferIn) (transferOut, error) {
	return transfer(tx, in)
}

// nextTransfer hands out two accounts no earlier cycle touched.
func (e *peersEnv) nextTransfer() (transferIn, error) {
	k := e.pairs.Add(1)
	if 2*k > e.nAcct {
		return transferIn{}, fmt.Errorf("tx5: out of seeded accounts (%d)", e.nAcct)
	}
	return transferIn{From: 2*k - 1, To: 2 * k, Amount: 7}, nil
}

// tx5 runs one transfer with run (timed), then checks, untimed, that the
// app's next read sees the new balance.
func (e *peersEnv) tx5(ctx context.Context, db *gorm.DB, run func(context.Context, transferIn) (transferOut, error)) (time.Duration, bool, error) {
	in, err := e.nextTransfer()
	if err != nil {
		return 0, false, err
	}
	t0 := time.Now()
	out, err := run(ctx, in)
	if err != nil {
		return 0, false, err
	}
	d := time.Since(t0)
	if out.ToBalance != peersStartBalance+in.Amount {
		return 0, false, fmt.Errorf("tx5: balance %d after the transfer, want %d", out.ToBalance, peersStartBalance+in.Amount)
	}
	var to peerAccount
	if err := db.WithContext(ctx).Take(&to, in.To).Error; err != nil {
		return 0, false, fmt.Errorf("tx5: read back: %w", err)
	}
	return d, to.Balance != out.ToBalance, nil
}

// transferDirect runs the transfer as a GORM transaction on db: a round
// trip per statement, plus BEGIN and COMMIT.
func transferDirect(db *gorm.DB) func(context.Context, transferIn) (transferOut, error) {
	return func(ctx context.Context, in transferIn) (out transferOut, err error) {
		err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			out, err = transfer(tx, in)
			return err
		})
		return out, err
	}
}

// transferFlypg runs the transfer as one call of a registered function:
// one round trip, then the wait for replay.
func transferFlypg(db *gorm.DB) func(context.Context, transferIn) (transferOut, error) {
	fn := flypg.Declare[transferIn, transferOut](peersTransfer)
	return func(ctx context.Context, in transferIn) (transferOut, error) {
		return fn.Call(ctx, db, in)
	}
}

// peerRun is one configuration's part of a workload.
type peerRun struct {
	name  string
	every int // joins every every-th cycle
	do    func(ctx context.Context) (d time.Duration, stale bool, err error)
}

type peerFigures struct {
	lat   sample
	stale int
}

// interleaveRuns runs the configurations one after the other in each
// cycle, so that all of them see the same machine state over the run.
func interleaveRuns(ctx context.Context, cycles int, runs []peerRun) (map[string]*peerFigures, error) {
	figs := map[string]*peerFigures{}
	for _, r := range runs {
		figs[r.name] = &peerFigures{}
	}
	for i := 0; i < cycles; i++ {
		for _, r := range runs {
			if i%r.every != 0 {
				continue
			}
			d, stale, err := r.do(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
			f := figs[r.name]
			f.lat = append(f.lat, d)
			if stale {
				f.stale++
			}
		}
	}
	return figs, nil
}

// report adds a workload's figures: p50, p99, samples and stale reads per
// configuration.
func (f peerFigures) report(r results, workload, cfg string) {
	r[fmt.Sprintf("%s_p50_ms_%s", workload, cfg)] = ms(f.lat.percentile(50))
	r[fmt.Sprintf("%s_p99_ms_%s", workload, cfg)] = ms(f.lat.percentile(99))
	r[fmt.Sprintf("%s_samples_%s", workload, cfg)] = float64(len(f.lat))
}

func runPeers(ctx context.Context, o options) (results, error) {
	if o.rtt < 0 {
		return nil, fmt.Errorf("negative -rtt %v", o.rtt)
	}
	plan := peersPlanFor(o.quick)
	e, err := startPeersEnv(ctx, o, plan)
	if err != nil {
		return nil, err
	}
	defer e.close()
	r := results{"rtt_ms": ms(o.rtt)}
	steps := []struct {
		name string
		run  func(context.Context, options, peersPlan, results) error
	}{
		{"warm-up", e.warmUp},
		{"link", e.measureLink},
		{"write", e.measureWrite},
		{"page", e.measurePage},
		{"tx5", e.measureTx5},
		{"throughput", e.measureThroughput},
	}
	for _, s := range steps {
		if err := s.run(ctx, o, plan, r); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if o.out != "" {
		path := filepath.Join(o.out, "peers.png")
		if err := writePeersChart(path, r); err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		o.logf("peers: chart written to %s", path)
	}
	return r, nil
}

// warmUp opens connections and fills statement caches on every path, so
// that no timed cycle pays for connecting across the link.
func (e *peersEnv) warmUp(ctx context.Context, o options, plan peersPlan, _ results) error {
	o.logf("peers: warm-up, %d cycles per configuration and workload", plan.warm)
	for _, name := range []string{cfgDirect, cfgResolver, cfgFlypg} {
		db := e.dbs[name]
		for i := 0; i < plan.warm; i++ {
			if _, _, err := e.write(ctx, db); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if _, _, err := e.page(ctx, db); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	for i := 0; i < plan.warm; i++ {
		if _, _, err := e.tx5(ctx, e.dbs[cfgDirect], transferDirect(e.dbs[cfgDirect])); err != nil {
			return fmt.Errorf("direct tx5: %w", err)
		}
		if _, _, err := e.tx5(ctx, e.dbs[cfgFlypg], transferFlypg(e.dbs[cfgFlypg])); err != nil {
			return fmt.Errorf("flypg tx5: %w", err)
		}
	}
	return nil
}

// measureLink times a bare query through the database link: the round
// trip any statement of the direct path pays, simulated overhead included.
func (e *peersEnv) measureLink(ctx context.Context, _ options, _ peersPlan, r results) error {
	db := e.dbs[cfgDirect].WithContext(ctx)
	s, err := sequential(ctx, 50, func(context.Context, int) error { return db.Exec("SELECT 1").Error })
	if err != nil {
		return err
	}
	r["link_select1_p50_ms"] = ms(s.percentile(50))
	return nil
}

func (e *peersEnv) measureWrite(ctx context.Context, o options, plan peersPlan, r results) error {
	o.logf("peers: write, %d cycles (direct in %d)", plan.write.cycles, plan.write.direct)
	rpcs0 := e.rPlug.Stats().Forward.RPCs
	stop := e.recordEvents()
	figs, err := interleaveRuns(ctx, plan.write.cycles, e.runs(plan.write, e.write))
	events := stop()
	if err != nil {
		return err
	}
	for name, f := range figs {
		f.report(r, "write", name)
		r["stale_reads_"+name] = float64(f.stale)
	}
	r["cycles"] = float64(plan.write.cycles)
	r["flypg_rpcs_per_write"] = float64(e.rPlug.Stats().Forward.RPCs-rpcs0) / float64(plan.write.cycles)
	// Where flypg's write time goes: the forwarded unit (one round trip to
	// the executor) and the wait for the local replica to replay it.
	var fwd, wait sample
	for _, ev := range events {
		fwd, wait = append(fwd, ev.Forward), append(wait, ev.Wait)
	}
	r["flypg_write_forward_p50_ms"] = ms(fwd.percentile(50))
	r["flypg_write_wait_p50_ms"] = ms(wait.percentile(50))
	r["flypg_write_wait_p99_ms"] = ms(wait.percentile(99))
	return nil
}

func (e *peersEnv) measurePage(ctx context.Context, o options, plan peersPlan, r results) error {
	o.logf("peers: page of 1 write + %d reads, %d cycles (direct in %d)", peersPageReads, plan.page.cycles, plan.page.direct)
	figs, err := interleaveRuns(ctx, plan.page.cycles, e.runs(plan.page, e.page))
	if err != nil {
		return err
	}
	for name, f := range figs {
		f.report(r, "page", name)
		r["page_stale_"+name] = float64(f.stale)
	}
	return nil
}

func (e *peersEnv) measureTx5(ctx context.Context, o options, plan peersPlan, r results) error {
	o.logf("peers: tx5, %d cycles (direct in %d)", plan.tx5.cycles, plan.tx5.direct)
	direct, fdb := e.dbs[cfgDirect], e.dbs[cfgFlypg]
	rpcs0 := e.rPlug.Stats().Forward.RPCs
	figs, err := interleaveRuns(ctx, plan.tx5.cycles, []peerRun{
		{cfgDirect, plan.tx5.every(), func(ctx context.Context) (time.Duration, bool, error) {
			return e.tx5(ctx, direct, transferDirect(direct))
		}},
		{cfgFlypg, 1, func(ctx context.Context) (time.Duration, bool, error) {
			return e.tx5(ctx, fdb, transferFlypg(fdb))
		}},
	})
	if err != nil {
		return err
	}
	for name, f := range figs {
		f.report(r, "tx5", name)
		r["tx5_stale_"+name] = float64(f.stale)
	}
	r["flypg_rpcs_per_tx5"] = float64(e.rPlug.Stats().Forward.RPCs-rpcs0) / float64(plan.tx5.cycles)
	return nil
}

// runs is a workload in the three configurations, direct on its stride.
func (e *peersEnv) runs(w workloadPlan, do func(context.Context, *gorm.DB) (time.Duration, bool, error)) []peerRun {
	var runs []peerRun
	for _, name := range []string{cfgDirect, cfgResolver, cfgFlypg} {
		every := 1
		if name == cfgDirect {
			every = w.every()
		}
		db := e.dbs[name]
		runs = append(runs, peerRun{name, every, func(ctx context.Context) (time.Duration, bool, error) {
			return do(ctx, db)
		}})
	}
	return runs
}

// measureThroughput runs the write workload (create + read-back) from 64
// clients, direct then flypg, each after an untimed phase that opens their
// connections.
func (e *peersEnv) measureThroughput(ctx context.Context, o options, plan peersPlan, r results) error {
	for _, name := range []string{cfgDirect, cfgFlypg} {
		o.logf("peers: %s, %d clients for %v", name, peersClients, plan.phase)
		db := e.dbs[name]
		var stale atomic.Int64
		cycle := func(ctx context.Context, _ int) error {
			_, s, err := e.write(ctx, db)
			if s {
				stale.Add(1)
			}
			return err
		}
		if _, _, err := throughput(ctx, peersClients, plan.warmPhase, cycle); err != nil {
			return fmt.Errorf("%s warm-up: %w", name, err)
		}
		stale.Store(0)
		n, took, err := throughput(ctx, peersClients, plan.phase, cycle)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		r["tps_c64_"+name] = float64(n) / took.Seconds()
		r["stale_reads_c64_"+name] = float64(stale.Load())
	}
	r["tps_ratio_c64"] = r["tps_c64_flypg"] / r["tps_c64_direct"]
	return nil
}

func peersGoals(r results) []goal {
	ratio := func(a, b string) float64 {
		if r[b] == 0 {
			return 0
		}
		return r[a] / r[b]
	}
	page, tx5 := ratio("page_p50_ms_flypg", "page_p50_ms_direct"), ratio("tx5_p50_ms_flypg", "tx5_p50_ms_direct")
	return []goal{
		{"stale_reads_flypg == 0 over >= 1000 cycles", fmt.Sprintf("%s of %s", format(r["stale_reads_flypg"]), format(r["cycles"])),
			r["stale_reads_flypg"] == 0 && r["cycles"] >= 1000},
		{"page_p50_ms_flypg <= 0.25 x direct", fmt.Sprintf("%s ms = %.3f x %s ms", format(r["page_p50_ms_flypg"]), page, format(r["page_p50_ms_direct"])),
			page <= 0.25},
		{"write_p50_ms_flypg <= 1.2 x rtt_ms", fmt.Sprintf("%s ms = %.3f x %s ms", format(r["write_p50_ms_flypg"]), ratio("write_p50_ms_flypg", "rtt_ms"), format(r["rtt_ms"])),
			r["write_p50_ms_flypg"] <= 1.2*r["rtt_ms"]},
		{"tx5_p50_ms_flypg <= 0.3 x direct", fmt.Sprintf("%s ms = %.3f x %s ms", format(r["tx5_p50_ms_flypg"]), tx5, format(r["tx5_p50_ms_direct"])),
			tx5 <= 0.3},
		{"stale_reads_dbresolver measured (no target)", fmt.Sprintf("%s of %s", format(r["stale_reads_dbresolver"]), format(r["cycles"])), true},
	}
}
