package main

// The faults suite checks flypg's failure guarantees under load: writers
// in the replica region insert rows with unique client-generated keys
// while an injector resets the link to the executor, slows it down,
// restarts the executor and stalls replication. Every write is classified
// by the error the client got (README, "Guarantees and failure modes"),
// and at the end the primary is audited: no acknowledged write lost, none
// applied twice, none reported as not committed that is there, every
// in-doubt write accounted for, and no call longer than the configured
// deadlines allow.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// faultsPlan sizes one run.
type faultsPlan struct {
	writers   int
	minWrites int           // the load runs at least until this many writes
	duration  time.Duration // and at least this long, so that faults of every kind recur
	maxTime   time.Duration // but never longer
	seed      uint64        // the fault schedule's random durations
}

func faultsPlanFor(quick bool) faultsPlan {
	if quick {
		return faultsPlan{writers: 8, minWrites: 500, duration: 12 * time.Second, maxTime: 90 * time.Second, seed: 1}
	}
	// 80 s of load at least, and one whole round of faultKinds (its long
	// partition alone outlasts the 20 s deduplication window), so about
	// 100 s: every kind at least once, the short ones several times, and
	// far more than 5,000 writes on 2 cores.
	return faultsPlan{writers: 12, minWrites: 5000, duration: 80 * time.Second, maxTime: 180 * time.Second, seed: 1}
}

// faultsStallLimit is the longest a single write may take: one forwarded
// unit's deadline, one replication wait, and a second of slack.
const faultsStallLimit = faultsRPCTimeout + faultsAwaitTimeout + time.Second

func runFaults(ctx context.Context, o options) (results, error) {
	plan := faultsPlanFor(o.quick)
	e, err := startFaultsEnv(ctx, plan.writers, o.durableDedup)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if err := e.warmUp(ctx); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	o.logf("faults: %d writers, at least %d writes and %v, faults injected throughout", plan.writers, plan.minWrites, plan.duration)
	logs, inj, err := e.runLoad(ctx, o, plan)
	if err != nil {
		return nil, err
	}
	o.logf("faults: load done; auditing the primary")
	r, err := e.audit(ctx, o, plan, logs, inj)
	if r != nil {
		r["durable_dedup"] = 0
		if o.durableDedup {
			r["durable_dedup"] = 1
		}
	}
	return r, err
}

// warmUp makes a few writes with no fault, which must all succeed: the
// set-up works, and the client is connected before the first fault.
func (e *faultsEnv) warmUp(ctx context.Context) error {
	for i := 0; i < 20; i++ {
		m := faultModes[i%len(faultModes)]
		if err := m.write(e.app.WithContext(ctx), fmt.Sprintf("warm-%02d", i), -1); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

// runLoad runs the writers and the injector together until the plan is
// met, then stops the injector (which clears every fault) and the
// writers, in that order, so that the last writes meet a healthy system.
func (e *faultsEnv) runLoad(ctx context.Context, o options, plan faultsPlan) ([]*writerLog, *injector, error) {
	t0 := time.Now()
	stop := make(chan struct{})
	var attempted atomic.Int64
	logs := make([]*writerLog, plan.writers)
	var wg sync.WaitGroup
	for w := range logs {
		logs[w] = &writerLog{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.writer(ctx, w, t0, stop, &attempted, logs[w])
		}()
	}
	in := &injector{e: e, rng: rand.New(rand.NewPCG(plan.seed, 0)), t0: t0, logf: o.logf, counts: map[string]int{}}
	injCtx, stopInjecting := context.WithCancel(ctx)
	injDone := make(chan error, 1)
	go func() { injDone <- in.run(injCtx) }()

	injErr, injEnded := waitLoad(ctx, t0, plan, &attempted, &in.done, injDone)
	stopInjecting()
	if !injEnded {
		injErr = <-injDone
	}
	close(stop)
	wg.Wait()
	if injErr != nil {
		return nil, nil, fmt.Errorf("fault injector: %w", injErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return logs, in, nil
}

// waitLoad waits until the plan is met (time, writes, and one whole round
// of the fault kinds), the time limit passes, ctx ends or the injector
// fails; injEnded reports that the injector's result was taken.
func waitLoad(ctx context.Context, t0 time.Time, plan faultsPlan, attempted, faults *atomic.Int64, injDone <-chan error) (injErr error, injEnded bool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-injDone:
			return err, true
		case <-ctx.Done():
			return nil, false
		case <-tick.C:
		}
		el := time.Since(t0)
		met := el >= plan.duration && attempted.Load() >= int64(plan.minWrites) && faults.Load() >= int64(len(faultKinds))
		if met || el >= plan.maxTime {
			return nil, false
		}
	}
}

func faultsGoals(r results) []goal {
	limit := ms(faultsStallLimit)
	accounted := r["in_doubt_committed"] + r["in_doubt_absent"]
	return []goal{
		{"lost_acked == 0", format(r["lost_acked"]), r["lost_acked"] == 0},
		{"duplicates == 0", format(r["duplicates"]), r["duplicates"] == 0},
		{"failed_but_present == 0", format(r["failed_but_present"]), r["failed_but_present"] == 0},
		{"in_doubt_committed + in_doubt_absent == writes_in_doubt", fmt.Sprintf("%s + %s of %s", format(r["in_doubt_committed"]), format(r["in_doubt_absent"]), format(r["writes_in_doubt"])),
			accounted == r["writes_in_doubt"]},
		{fmt.Sprintf("max_stall_ms <= RPCTimeout + AwaitTimeout + 1000 = %s", format(limit)), format(r["max_stall_ms"]), r["max_stall_ms"] <= limit},
		{"writes_unclassified == 0", format(r["writes_unclassified"]), r["writes_unclassified"] == 0},
		{"acked_not_visible_locally == 0 (nil means replayed)", format(r["acked_not_visible_locally"]), r["acked_not_visible_locally"] == 0},
		{"torn_transactions == 0", format(r["torn_transactions"]), r["torn_transactions"] == 0},
		{"writes_attempted >= planned minimum", fmt.Sprintf("%s of %s", format(r["writes_attempted"]), format(r["writes_planned_min"])), r["writes_attempted"] >= r["writes_planned_min"]},
		{"call_writes_attempted > 0", format(r["call_writes_attempted"]), r["call_writes_attempted"] > 0},
		{"executor_instances >= 2", format(r["executor_instances"]), r["executor_instances"] >= 2},
		everyFaultKind(r),
	}
}

// everyFaultKind checks that each kind of fault happened at least once.
func everyFaultKind(r results) goal {
	var parts []string
	met := true
	for _, k := range faultKindNames() {
		n := r["faults_"+k]
		met = met && n > 0
		parts = append(parts, format(n)+" "+k)
	}
	return goal{"every fault kind injected", strings.Join(parts, ", "), met}
}
