package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/migration"
	"github.com/flypg/flypg/pgtest"
)

// trackerEnv is one primary + replica with the connections the tracker
// suite needs.
type trackerEnv struct {
	cluster *pgtest.Cluster
	primary *pgxpool.Pool // writers
	replica *sql.DB       // the trackers' sources
	oracle  *pgx.Conn     // the oracle's own connection to the replica
}

func startTrackerEnv(ctx context.Context, o options) (*trackerEnv, error) {
	c, err := pgtest.Start(ctx, pgtest.Options{Replicas: 1, Settings: map[string]string{"max_connections": "300"}})
	if err != nil {
		return nil, err
	}
	e := &trackerEnv{cluster: c}
	cfg, err := pgxpool.ParseConfig(c.Primary.DSN(""))
	if err != nil {
		e.close()
		return nil, err
	}
	cfg.MaxConns = 200
	if e.primary, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		e.close()
		return nil, err
	}
	if e.replica, err = sql.Open("pgx", c.Replicas[0].DSN("")); err != nil {
		e.close()
		return nil, err
	}
	if e.oracle, err = pgx.Connect(ctx, c.Replicas[0].DSN("")); err != nil {
		e.close()
		return nil, err
	}
	if _, err := e.primary.Exec(ctx, `CREATE TABLE bench (id bigserial PRIMARY KEY, v bigint NOT NULL)`); err != nil {
		e.close()
		return nil, err
	}
	if err := migration.Up(ctx, stdlibDB(e.primary)); err != nil {
		e.close()
		return nil, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *trackerEnv) close() {
	if e.oracle != nil {
		e.oracle.Close(context.Background())
	}
	if e.replica != nil {
		e.replica.Close()
	}
	if e.primary != nil {
		e.primary.Close()
	}
	e.cluster.Close()
}

// commit inserts a row and returns the commit LSN as the executor reads it
// (pg_current_wal_insert_lsn() right after commit, same connection) and the
// time the commit returned.
func (e *trackerEnv) commit(ctx context.Context, v int64) (lsn.LSN, time.Time, error) {
	c, err := e.primary.Acquire(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `INSERT INTO bench (v) VALUES ($1)`, v); err != nil {
		return 0, time.Time{}, err
	}
	at := time.Now()
	var s string
	if err := c.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		return 0, time.Time{}, err
	}
	l, err := lsn.Parse(s)
	return l.Normalize(0), at, err
}

// oracleWait polls the replica in a tight loop until it has replayed target
// and returns the first time it saw so: the physical limit of any waiter.
func (e *trackerEnv) oracleWait(ctx context.Context, target lsn.LSN) (time.Time, error) {
	for {
		var s string
		if err := e.oracle.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn()::text`).Scan(&s); err != nil {
			return time.Time{}, err
		}
		at := time.Now()
		l, err := lsn.Parse(s)
		if err != nil {
			return time.Time{}, err
		}
		if l >= target {
			return at, nil
		}
	}
}

func runTracker(ctx context.Context, o options) (results, error) {
	e, err := startTrackerEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	r := results{}
	cycles, watchCycles, phase := 3000, 200, 4*time.Second
	if o.quick {
		cycles, watchCycles, phase = 200, 20, time.Second
	}

	// c=1 against the oracle: flypg's tracker, then the stored function.
	poll := lsn.NewReplaySource(e.replica)
	defer poll.Close()
	o.logf("tracker: %d write+wait cycles, tracker vs oracle", cycles)
	oracleLat, tax, looks, err := e.versusOracle(ctx, lsn.Config{Source: poll}, cycles)
	if err != nil {
		return nil, fmt.Errorf("tracker c1: %w", err)
	}
	r["oracle_p50_us"] = us(oracleLat.percentile(50))
	r["oracle_p99_us"] = us(oracleLat.percentile(99))
	r["tracker_tax_p50_us"] = us(tax.percentile(50))
	r["tracker_tax_p99_us"] = us(tax.percentile(99))
	r["tracker_polls_per_write_c1"] = float64(looks) / float64(cycles)
	r["cycles_c1"] = float64(cycles)

	watch := lsn.NewWatchSource(e.replica, 2*time.Second)
	defer watch.Close()
	o.logf("tracker: %d cycles with the stored function watch_for_lsn_change", watchCycles)
	_, wtax, _, err := e.versusOracle(ctx, lsn.Config{Source: watch, Schedule: func(time.Duration) time.Duration { return 0 }}, watchCycles)
	if err != nil {
		return nil, fmt.Errorf("watch c1: %w", err)
	}
	r["watch_tax_p50_us"] = us(wtax.percentile(50))
	r["watch_tax_p99_us"] = us(wtax.percentile(99))

	maxWaiting := 0
	for _, c := range []int{64, 1024} {
		o.logf("tracker: %d concurrent writers for %v", c, phase)
		m, err := e.concurrent(ctx, poll, c, phase)
		if err != nil {
			return nil, fmt.Errorf("tracker c%d: %w", c, err)
		}
		r[fmt.Sprintf("tracker_polls_per_sec_c%d", c)] = m.pollsPerSec
		r[fmt.Sprintf("tracker_writes_per_sec_c%d", c)] = m.writesPerSec
		r[fmt.Sprintf("tracker_wait_p50_us_c%d", c)] = us(m.wait.percentile(50))
		r[fmt.Sprintf("tracker_wait_p99_us_c%d", c)] = us(m.wait.percentile(99))
		maxWaiting = max(maxWaiting, m.maxWaiting)
	}

	n := 100_000
	o.logf("tracker: %d simultaneous waiters", n)
	m, err := e.manyWaiters(ctx, poll, n)
	if err != nil {
		return nil, fmt.Errorf("tracker 100k: %w", err)
	}
	r["tracker_release_ms_100k"] = ms(m.release)
	r["tracker_bytes_per_waiter_100k"] = m.bytesPerWaiter
	r["tracker_looks_while_100k_waited"] = float64(m.looks)
	r["tracker_waiters_max"] = float64(max(maxWaiting, m.maxWaiting))
	return r, nil
}

// versusOracle runs write+wait cycles one at a time; for each write the
// oracle and the tracker wait concurrently. It returns the oracle's replay
// latency (commit to seen), the tracker's tax (release minus the oracle's
// time for the same write) and the tracker's looks.
func (e *trackerEnv) versusOracle(ctx context.Context, cfg lsn.Config, cycles int) (oracle, tax sample, looks uint64, err error) {
	cfg.Timeout = 5 * time.Second
	tr, err := lsn.NewTracker(cfg)
	if err != nil {
		return nil, nil, 0, err
	}
	defer tr.Close()
	for i := 0; i < cycles; i++ {
		target, committed, err := e.commit(ctx, int64(i))
		if err != nil {
			return nil, nil, 0, err
		}
		oracleDone := make(chan time.Time, 1)
		oracleErr := make(chan error, 1)
		go func() {
			at, err := e.oracleWait(ctx, target)
			if err != nil {
				oracleErr <- err
				return
			}
			oracleDone <- at
		}()
		if err := tr.Wait(ctx, target); err != nil {
			return nil, nil, 0, err
		}
		released := time.Now()
		var seen time.Time
		select {
		case seen = <-oracleDone:
		case err := <-oracleErr:
			return nil, nil, 0, err
		}
		oracle = append(oracle, seen.Sub(committed))
		tax = append(tax, released.Sub(seen))
	}
	return oracle, tax, tr.Stats().Looks, nil
}

type concurrentFigures struct {
	pollsPerSec, writesPerSec float64
	wait                      sample
	maxWaiting                int
}

// concurrent runs c writers that each commit and wait, for d.
func (e *trackerEnv) concurrent(ctx context.Context, src lsn.Source, c int, d time.Duration) (concurrentFigures, error) {
	tr, err := lsn.NewTracker(lsn.Config{Source: src, Timeout: 10 * time.Second})
	if err != nil {
		return concurrentFigures{}, err
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu     sync.Mutex
		waits  sample
		writes atomic.Int64
		first  error
		wg     sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	looks0 := tr.Stats().Looks
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local sample
			for time.Now().Before(deadline) {
				target, _, err := e.commit(ctx, 1)
				if err == nil {
					t0 := time.Now()
					err = tr.Wait(ctx, target)
					local = append(local, time.Since(t0))
				}
				if err != nil {
					mu.Lock()
					if first == nil && !errors.Is(err, context.Canceled) {
						first = err
					}
					mu.Unlock()
					cancel()
					return
				}
				writes.Add(1)
			}
			mu.Lock()
			waits = append(waits, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return concurrentFigures{}, first
	}
	st := tr.Stats()
	return concurrentFigures{
		pollsPerSec:  float64(st.Looks-looks0) / elapsed.Seconds(),
		writesPerSec: float64(writes.Load()) / elapsed.Seconds(),
		wait:         waits,
		maxWaiting:   st.MaxWaiting,
	}, nil
}

type manyFigures struct {
	release        time.Duration
	bytesPerWaiter float64
	looks          uint64
	maxWaiting     int
}

// manyWaiters parks n goroutines on one tracker for a position not yet
// written, then writes it and measures how long releasing them all takes
// once the replica has replayed it.
func (e *trackerEnv) manyWaiters(ctx context.Context, src lsn.Source, n int) (manyFigures, error) {
	tr, err := lsn.NewTracker(lsn.Config{Source: src, Timeout: 2 * time.Minute})
	if err != nil {
		return manyFigures{}, err
	}
	defer tr.Close()
	var s string
	if err := e.primary.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		return manyFigures{}, err
	}
	current, err := lsn.Parse(s)
	if err != nil {
		return manyFigures{}, err
	}
	target := current + 1 // the next commit passes it

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tr.Wait(ctx, target) != nil {
				failed.Add(1)
			}
		}()
	}
	for tr.Stats().Waiting < n {
		time.Sleep(time.Millisecond)
	}
	runtime.ReadMemStats(&after)
	looks0 := tr.Stats().Looks
	used := float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)

	reached := make(chan time.Time, 1)
	go func() {
		at, err := e.oracleWait(ctx, target)
		if err != nil {
			at = time.Time{}
		}
		reached <- at
	}()
	if _, _, err := e.commit(ctx, 2); err != nil {
		return manyFigures{}, err
	}
	wg.Wait()
	done := time.Now()
	at := <-reached
	if at.IsZero() {
		return manyFigures{}, errors.New("oracle failed")
	}
	if f := failed.Load(); f > 0 {
		return manyFigures{}, fmt.Errorf("%d of %d waiters failed", f, n)
	}
	st := tr.Stats()
	return manyFigures{
		release:        done.Sub(at),
		bytesPerWaiter: used / float64(n),
		looks:          st.Looks - looks0,
		maxWaiting:     st.MaxWaiting,
	}, nil
}

func trackerGoals(r results) []goal {
	return []goal{
		{"tracker_tax_p50_us <= 200", format(r["tracker_tax_p50_us"]), r["tracker_tax_p50_us"] <= 200},
		{"tracker_tax_p99_us <= 2000", format(r["tracker_tax_p99_us"]), r["tracker_tax_p99_us"] <= 2000},
		{"polls/s at 1024 writers <= at 64", fmt.Sprintf("%s vs %s", format(r["tracker_polls_per_sec_c1024"]), format(r["tracker_polls_per_sec_c64"])), r["tracker_polls_per_sec_c1024"] <= r["tracker_polls_per_sec_c64"]},
		{"100,000 simultaneous waiters on one tracker", format(r["tracker_waiters_max"]), r["tracker_waiters_max"] >= 100_000},
	}
}
