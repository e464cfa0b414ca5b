package main

// The soak suite runs a long mixed load of forwarded units (lone writes on
// sessions, transactions, calls) from a replica-region app against
// cmd/flypg-executor running as a process of its own, and measures what
// stays behind: heap after GC (executor and client), the executor's RSS,
// goroutines and file descriptors, each after a warm-up and again at the
// end, both times with the load stopped and the executor's deduplication
// window passed, so that only what leaks is left. Heap profiles of both
// moments are written next to soak.json for finding what grew.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
)

// soakPlan sizes one run.
type soakPlan struct {
	clients int
	warmup  int           // units before the first measurement
	units   int           // units between the two measurements
	window  time.Duration // the executor's DedupWindow
	quiet   time.Duration // waited out, load stopped, before each measurement
	auth    bool          // authenticate: mutual TLS keyed from the secret
}

func soakPlanFor(o options) soakPlan {
	p := soakPlan{clients: 32, warmup: 50_000, units: o.soakUnits, window: 20 * time.Second, auth: o.soakAuth}
	if o.quick {
		p.warmup, p.units = 5_000, 20_000
	}
	// The executor drops expired ledger entries every second.
	p.quiet = p.window + 3*time.Second
	return p
}

// soakRow is what lone writes and transactions insert.
type soakRow struct {
	ID   uint64
	Kind string
	N    int
}

func (soakRow) TableName() string { return "soak_rows" }

const soakCallSQL = `INSERT INTO soak_calls (n) VALUES (($1::jsonb ->> 'n')::int) RETURNING to_jsonb(id)::text`

// soakCall is the function the executor serves with soakCallSQL.
var soakCall = flypg.Declare[map[string]int, int64]("soak_call")

// soakProfileRate samples the heap profiles finely enough to show what is
// retained per unit (the runtime's default samples once per 512 KiB).
const soakProfileRate = 16 << 10

func runSoak(ctx context.Context, o options) (results, error) {
	runtime.MemProfileRate = soakProfileRate
	plan := soakPlanFor(o)
	c, admin, stop, err := startBenchCluster(ctx, 1)
	if err != nil {
		return nil, err
	}
	defer stop()
	if err := admin.AutoMigrate(&soakRow{}); err != nil {
		return nil, err
	}
	if err := admin.Exec(`CREATE TABLE soak_calls (id bigserial PRIMARY KEY, n int NOT NULL)`).Error; err != nil {
		return nil, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return nil, err
	}
	// The executor's pools open all their connections at once, so that the
	// file descriptors measured do not depend on how far the warm-up's
	// concurrency grew them.
	secret := ""
	if plan.auth {
		secret = benchSecret
	}
	x, err := startExecutorProcess(ctx, executorOptions{
		dir: o.out, name: "soak", dsn: c.Primary.DSN("") + "&pool_min_conns=20&pool_max_conns=20",
		secret: secret, window: plan.window, functions: []string{soakCall.Name() + "=" + soakCallSQL},
		env: []string{fmt.Sprintf("GODEBUG=memprofilerate=%d", soakProfileRate)},
	})
	if err != nil {
		return nil, err
	}
	defer x.stop()
	app, appSQL, err := openPlainGORM(c.Replicas[0].DSN(""))
	if err != nil {
		return nil, err
	}
	defer appSQL.Close()
	pcfg := flypg.Config{Region: faultsReplicaRegion, PrimaryRegion: faultsPrimaryRegion, PrimaryAddr: x.addr, Insecure: true}
	if plan.auth {
		pcfg.Secret, pcfg.Insecure = benchSecret, false
	}
	plug := flypg.New(pcfg)
	if err := app.Use(plug); err != nil {
		return nil, err
	}
	defer plug.Close()
	appSQL.SetMaxOpenConns(plan.clients * 2)

	o.logf("soak: warm-up, %d units from %d clients", plan.warmup, plan.clients)
	if _, err := soakLoad(ctx, app, plan.clients, plan.warmup, o.logf); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	o.logf("soak: quiet for %v, then measure", plan.quiet)
	before, err := x.measure(ctx, plan.quiet, filepath.Join(o.out, "soak-heap-before"))
	if err != nil {
		return nil, err
	}
	o.logf("soak: %d units from %d clients", plan.units, plan.clients)
	start := time.Now()
	tally, err := soakLoad(ctx, app, plan.clients, plan.units, o.logf)
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	o.logf("soak: load done in %v; quiet again, then measure", took.Round(time.Second))
	after, err := x.measure(ctx, plan.quiet, filepath.Join(o.out, "soak-heap-after"))
	if err != nil {
		return nil, err
	}
	r := results{
		"statements":                 float64(tally.total()),
		"units_per_sec":              float64(tally.total()) / took.Seconds(),
		"clients":                    float64(plan.clients),
		"errors":                     float64(tally.errors.Load()),
		"executor_heap_growth_bytes": after.execHeap - before.execHeap,
		"client_heap_growth_bytes":   after.clientHeap - before.clientHeap,
		"executor_rss_growth_bytes":  after.execRSS - before.execRSS,
		"executor_rss_bytes":         after.execRSS,
		"executor_goroutines_growth": after.execGoroutines - before.execGoroutines,
		"client_goroutines_growth":   after.clientGoroutines - before.clientGoroutines,
		"executor_fds_growth":        after.execFDs - before.execFDs,
		"client_fds_growth":          after.clientFDs - before.clientFDs,
		"executor_heap_after_bytes":  after.execHeap,
		"client_heap_after_bytes":    after.clientHeap,
		"units_lone_writes":          float64(tally.lone.Load()),
		"units_transactions":         float64(tally.tx.Load()),
		"units_calls":                float64(tally.calls.Load()),
		"authenticated":              float64(boolInt(plan.auth)),
	}
	r["heap_growth_bytes"] = max(r["executor_heap_growth_bytes"], r["client_heap_growth_bytes"])
	r["goroutines_growth"] = r["executor_goroutines_growth"] + r["client_goroutines_growth"]
	r["fds_growth"] = r["executor_fds_growth"] + r["client_fds_growth"]
	return r, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func soakGoals(r results) []goal {
	return []goal{
		{"statements >= 1,000,000", format(r["statements"]), r["statements"] >= 1_000_000},
		{"errors == 0", format(r["errors"]), r["errors"] == 0},
		{"heap_growth_bytes <= 1 MiB (executor and client)", format(r["heap_growth_bytes"]), r["heap_growth_bytes"] <= 1<<20},
		{"executor_rss_growth_bytes <= 16 MiB", format(r["executor_rss_growth_bytes"]), r["executor_rss_growth_bytes"] <= 16<<20},
		{"goroutines_growth <= 0", format(r["goroutines_growth"]), r["goroutines_growth"] <= 0},
		{"fds_growth <= 0", format(r["fds_growth"]), r["fds_growth"] <= 0},
	}
}

// soakTally counts units by kind.
type soakTally struct {
	lone, tx, calls, errors atomic.Int64
	firstErr                atomic.Pointer[error]
}

func (t *soakTally) total() int64 { return t.lone.Load() + t.tx.Load() + t.calls.Load() }

// soakLoad runs n units from clients goroutines, in turn: GORM creates
// without and with GORM's own transaction and raw INSERTs (lone writes,
// each a message of a session), transactions of two statements, and calls.
// Nobody waits for replication (fly.NoAwait): the soak is about the
// forwarding path.
func soakLoad(ctx context.Context, app *gorm.DB, clients, n int, logf func(string, ...any)) (*soakTally, error) {
	t := &soakTally{}
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx = fly.NoAwait(ctx)
	lone := app.Session(&gorm.Session{SkipDefaultTransaction: true, Context: ctx})
	db := app.WithContext(ctx)
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-progress.C:
				logf("soak: %d units", t.total())
			case <-stop:
				return
			}
		}
	}()
	defer close(stop)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1))
				if i > n {
					return
				}
				var err error
				switch i % 10 {
				case 0, 1, 2:
					err = lone.Create(&soakRow{Kind: "lone", N: i}).Error
					t.lone.Add(1)
				case 3, 4:
					err = db.Exec(`INSERT INTO soak_rows (kind, n) VALUES ('exec', ?)`, i).Error
					t.lone.Add(1)
				case 5, 6:
					err = db.Create(&soakRow{Kind: "implicit", N: i}).Error
					t.lone.Add(1)
				case 7, 8:
					err = db.Transaction(func(tx *gorm.DB) error {
						r := soakRow{Kind: "tx", N: i}
						if err := tx.Create(&r).Error; err != nil {
							return err
						}
						return tx.Model(&r).Update("n", i+1).Error
					})
					t.tx.Add(1)
				case 9:
					_, err = soakCall.Call(ctx, app, map[string]int{"n": i})
					t.calls.Add(1)
				}
				if err != nil {
					if t.errors.Add(1) == 1 {
						t.firstErr.Store(&err)
						logf("soak: first error: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return t, nil
}

// soakSnapshot is one measurement.
type soakSnapshot struct {
	execHeap, execRSS, execGoroutines, execFDs float64
	clientHeap, clientGoroutines, clientFDs    float64
}

// measure waits quiet (the executor's deduplication window and a little),
// then measures both processes after garbage collection and writes their
// heap profiles to prefix-*.pb.gz.
func (x *executorProcess) measure(ctx context.Context, quiet time.Duration, prefix string) (soakSnapshot, error) {
	var s soakSnapshot
	if !sleepCtx(ctx, quiet) {
		return s, ctx.Err()
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.clientHeap = float64(ms.HeapAlloc)
	s.clientGoroutines = float64(runtime.NumGoroutine())
	s.clientFDs = float64(countFDs("self"))
	if f, err := os.Create(prefix + "-client.pb.gz"); err == nil {
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	text, err := x.get(ctx, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return s, err
	}
	heap, ok := memStat(text, "HeapAlloc")
	if !ok {
		return s, fmt.Errorf("no HeapAlloc in the executor's heap profile")
	}
	s.execHeap = heap
	if bin, err := x.get(ctx, "/debug/pprof/heap"); err == nil {
		os.WriteFile(prefix+"-executor.pb.gz", []byte(bin), 0o644)
	}
	g, err := x.get(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return s, err
	}
	if _, err := fmt.Sscanf(g, "goroutine profile: total %f", &s.execGoroutines); err != nil {
		return s, fmt.Errorf("goroutine count: %w", err)
	}
	pid := strconv.Itoa(x.cmd.Process.Pid)
	s.execFDs = float64(countFDs(pid))
	rss, err := vmRSS(pid)
	if err != nil {
		return s, err
	}
	s.execRSS = rss
	return s, nil
}

// memStat reads "# name = value" from a heap profile in text form.
func memStat(profile, name string) (float64, bool) {
	for _, line := range strings.Split(profile, "\n") {
		if v, ok := strings.CutPrefix(line, "# "+name+" = "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func countFDs(pid string) int {
	entries, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// vmRSS reads a process's resident set size in bytes.
func vmRSS(pid string) (float64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %s", pid)
}
