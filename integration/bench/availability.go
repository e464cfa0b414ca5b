package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/pgtest"
)

// The availability suite: a replica-region app under steady read+write
// load while (a) its local replica stops for a while and starts again,
// (b) its replica's replay stalls past MaxReplicaLag, (c) the primary
// fails over to the replica of a third region (stopped, promoted, the
// app's replica re-pointed). Its executor target names the executors of
// both other regions, behind links with the cross-region RTT.

const availClients = 8

type availRow struct {
	ID     uint64
	Key    string `gorm:"index;not null"`
	Client int
}

func (availRow) TableName() string { return "avail_rows" }

// availPhase counts reads during one fault.
type availPhase struct{ attempted, ok atomic.Int64 }

type availLoad struct {
	app *gorm.DB

	phase       atomic.Pointer[availPhase] // the fault under way, nil between faults
	stale       atomic.Int64
	writeErrs   atomic.Int64
	mu          sync.Mutex
	acked       []string
	ackedAt     []time.Time
	firstErrors map[string]int // error kinds seen, for the log
}

func runAvailability(ctx context.Context, o options) (results, error) {
	hold := 10 * time.Second
	if o.quick {
		hold = 3 * time.Second
	}
	c, admin, stop, err := startBenchCluster(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer stop()
	if err := admin.WithContext(ctx).AutoMigrate(&availRow{}); err != nil {
		return nil, err
	}
	// A function that writes, called through a SELECT: the safety net's
	// case.
	if err := admin.WithContext(ctx).Exec(`CREATE FUNCTION avail_insert(k text, c int) RETURNS bigint LANGUAGE sql AS 'INSERT INTO avail_rows (key, client) VALUES (k, c) RETURNING id'`).Error; err != nil {
		return nil, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return nil, err
	}

	// The executors of the primary region (on the primary) and of the
	// third region (on replica 2: NOT_SERVING until promoted), each behind
	// a link with the cross-region RTT.
	var targets []string
	for _, n := range []*pgtest.Node{c.Primary, c.Replicas[1]} {
		stop, addr, err := availExecutor(n.DSN(""))
		if err != nil {
			return nil, err
		}
		defer stop()
		l, err := pgtest.NewLink("app-executor-"+n.Name(), addr)
		if err != nil {
			return nil, err
		}
		defer l.Close()
		if err := l.SetRTT(o.rtt); err != nil {
			return nil, err
		}
		targets = append(targets, l.Addr())
	}
	app, appSQL, err := openPlainGORM(c.Replicas[0].DSN(""))
	if err != nil {
		return nil, err
	}
	defer appSQL.Close()
	appSQL.SetMaxOpenConns(4 * availClients)
	plug := flypg.New(flypg.Config{
		Region: faultsReplicaRegion, PrimaryRegion: faultsPrimaryRegion, Secret: faultsSecret,
		PrimaryAddr: strings.Join(targets, ","), AwaitTimeout: 5 * time.Second, RPCTimeout: 3 * time.Second,
	})
	if err := app.Use(plug); err != nil {
		return nil, err
	}
	defer plug.Close()

	ld := &availLoad{app: app, firstErrors: map[string]int{}}
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range availClients {
		wg.Add(1)
		go func() { defer wg.Done(); ld.client(lctx, i) }()
	}
	defer func() { stopLoad(); wg.Wait() }()
	if !sleepCtx(ctx, 3*time.Second) {
		return nil, ctx.Err()
	}

	// (a) The local replica stops, then starts again.
	var a, b availPhase
	ld.phase.Store(&a)
	o.logf("availability: (a) local replica stopped for %s", hold)
	if err := c.Replicas[0].Stop(ctx); err != nil {
		return nil, err
	}
	sleepCtx(ctx, hold)
	if err := c.Replicas[0].Start(ctx); err != nil {
		return nil, err
	}
	ld.phase.Store(nil)
	if err := availSettle(ctx, plug); err != nil {
		return nil, fmt.Errorf("after (a): %w", err)
	}

	// (b) Replay stalls past MaxReplicaLag.
	o.logf("availability: (b) replay stalled for %s", hold)
	ld.phase.Store(&b)
	if err := c.Replicas[0].Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": "1h"}); err != nil {
		return nil, err
	}
	sleepCtx(ctx, hold)
	if err := c.Replicas[0].Reconfigure(ctx, map[string]string{"recovery_min_apply_delay": ""}); err != nil {
		return nil, err
	}
	ld.phase.Store(nil)
	if err := availSettle(ctx, plug); err != nil {
		return nil, fmt.Errorf("after (b): %w", err)
	}

	// (c) Failover to the third region's replica.
	o.logf("availability: (c) failover")
	if err := c.Primary.Stop(ctx); err != nil {
		return nil, err
	}
	promoted := time.Now()
	if err := c.Replicas[1].Promote(ctx); err != nil {
		return nil, err
	}
	if err := c.Replicas[0].Follow(ctx, c.Replicas[1]); err != nil {
		return nil, err
	}
	resume := time.Duration(-1)
	deadline := time.Now().Add(30 * time.Second)
	for resume < 0 && time.Now().Before(deadline) && sleepCtx(ctx, 10*time.Millisecond) {
		if at, ok := ld.firstAckAfter(promoted); ok {
			resume = at.Sub(promoted)
		}
	}
	sleepCtx(ctx, 3*time.Second)
	stopLoad()
	wg.Wait()

	// Audit on the new primary.
	newPrimary, npSQL, err := openPlainGORM(c.Replicas[1].DSN(""))
	if err != nil {
		return nil, err
	}
	defer npSQL.Close()
	var rows []struct {
		Key string
		N   int
	}
	if err := newPrimary.WithContext(ctx).Raw("SELECT key, count(*) AS n FROM avail_rows GROUP BY key").Scan(&rows).Error; err != nil {
		return nil, err
	}
	have := map[string]int{}
	dups := 0
	for _, r := range rows {
		have[r.Key] = r.N
		if r.N > 1 {
			dups++
		}
	}
	lost := 0
	for _, k := range ld.acked {
		if have[k] == 0 {
			lost++
		}
	}
	for k, n := range ld.firstErrors {
		o.logf("availability: %d × %s", n, k)
	}
	attempted := a.attempted.Load() + b.attempted.Load()
	okReads := a.ok.Load() + b.ok.Load()
	r := results{
		"clients":                        availClients,
		"rtt_ms":                         float64(o.rtt.Milliseconds()),
		"fault_seconds":                  hold.Seconds(),
		"reads_attempted":                float64(attempted),
		"read_availability":              ratio(okReads, attempted),
		"read_availability_replica_down": ratio(a.ok.Load(), a.attempted.Load()),
		"read_availability_lagging":      ratio(b.ok.Load(), b.attempted.Load()),
		"stale_reads":                    float64(ld.stale.Load()),
		"writes_acked":                   float64(len(ld.acked)),
		"write_errors":                   float64(ld.writeErrs.Load()),
		"lost_acked":                     float64(lost),
		"duplicates":                     float64(dups),
		"write_resume_ms_after_failover": float64(resume.Milliseconds()),
		"safety_net_reruns":              float64(plug.Stats().Reads.SafetyNetReruns),
	}
	return r, nil
}

func ratio(n, d int64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// availSettle waits until reads are back on the local replica.
func availSettle(ctx context.Context, p *flypg.Plugin) error {
	deadline := time.Now().Add(60 * time.Second)
	for p.ReadMode().Primary {
		if time.Now().After(deadline) || !sleepCtx(ctx, 20*time.Millisecond) {
			return errors.New("reads did not return to the local replica")
		}
	}
	return nil
}

// client writes a row, reads it back (a miss is a stale read), reads the
// client's row count, and now and then calls a function that writes
// through a SELECT (the safety net's case).
func (l *availLoad) client(ctx context.Context, id int) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("c%d-%d", id, i)
		var err error
		if i%20 == 19 {
			var n int64
			err = l.app.WithContext(ctx).Raw("SELECT avail_insert(?, ?)", key, id).Scan(&n).Error
		} else {
			err = l.app.WithContext(ctx).Create(&availRow{Key: key, Client: id}).Error
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.writeErrs.Add(1)
			l.note(err)
			continue
		}
		l.mu.Lock()
		l.acked, l.ackedAt = append(l.acked, key), append(l.ackedAt, time.Now())
		l.mu.Unlock()
		ph := l.phase.Load()
		var n int64
		err = l.app.WithContext(ctx).Model(&availRow{}).Where("key = ?", key).Count(&n).Error
		if ctx.Err() != nil {
			return
		}
		if ph != nil {
			ph.attempted.Add(1)
			if err == nil {
				ph.ok.Add(1)
			}
		}
		switch {
		case err != nil:
			l.note(err)
		case n != 1:
			l.stale.Add(1)
		}
	}
}

// requestID is a unit's request ID in an error message.
var requestID = regexp.MustCompile(` \(request [0-9a-f]+\)`)

func (l *availLoad) note(err error) {
	msg := requestID.ReplaceAllString(err.Error(), "")
	if len(msg) > 160 {
		msg = msg[:160]
	}
	l.mu.Lock()
	l.firstErrors[msg]++
	l.mu.Unlock()
}

func (l *availLoad) firstAckAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.ackedAt) - 1; i >= 0; i-- {
		if !l.ackedAt[i].After(t) {
			return time.Time{}, false
		}
		if i == 0 || !l.ackedAt[i-1].After(t) {
			return l.ackedAt[i], true
		}
	}
	return time.Time{}, false
}

// availExecutor serves a primary-region app's executor on dsn (NOT_SERVING
// while that database is in recovery).
func availExecutor(dsn string) (stop func(), addr string, err error) {
	db, s, err := openPlainGORM(dsn)
	if err != nil {
		return nil, "", err
	}
	p := flypg.New(flypg.Config{Region: faultsPrimaryRegion, PrimaryRegion: faultsPrimaryRegion, Secret: faultsSecret, PrimaryDSN: dsn + "&pool_max_conns=32"})
	if err := db.Use(p); err != nil {
		s.Close()
		return nil, "", err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.Close()
		s.Close()
		return nil, "", err
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(lis) }()
	return func() { p.Close(); <-served; s.Close() }, lis.Addr().String(), nil
}

func availabilityGoals(r results) []goal {
	return []goal{
		{"read_availability ≥ 0.99 through (a) and (b)", format(r["read_availability"]), r["read_availability"] >= 0.99},
		{"stale_reads = 0", format(r["stale_reads"]), r["stale_reads"] == 0},
		{"lost_acked = 0", format(r["lost_acked"]), r["lost_acked"] == 0},
		{"duplicates = 0", format(r["duplicates"]), r["duplicates"] == 0},
		{"write_resume_ms_after_failover ≤ 5000", format(r["write_resume_ms_after_failover"]), r["write_resume_ms_after_failover"] >= 0 && r["write_resume_ms_after_failover"] <= 5000},
	}
}
