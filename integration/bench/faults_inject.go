package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/flypg/flypg/pgtest"
)

// faultEvent is one injected fault, for the timeline in the report.
type faultEvent struct {
	kind       string
	start, end time.Duration // since the load began
}

// injector injects faults one at a time, each followed by a healthy gap,
// until its context ends. It is the only goroutine that touches the links
// and swaps the executor while the load runs.
type injector struct {
	e      *faultsEnv
	rng    *rand.Rand
	t0     time.Time
	logf   func(format string, args ...any)
	events []faultEvent
	counts map[string]int
	done   atomic.Int64 // faults injected and undone, read by the load's controller
	turn   int          // the instance the next restart or switch acts on
}

// faultKinds are injected in turn; each holds its fault and then undoes
// it, even when ctx ends meanwhile, so that no fault outlives the load.
// Plain resets and restarts mostly meet idle connections or let units in
// flight finish; the compound kinds lose replies on purpose (a reset while
// replies sit in a slow link), which is what exercises the retries by
// request ID and the in-doubt reports.
var faultKinds = []struct {
	name   string
	inject func(in *injector, ctx context.Context) (string, error)
}{
	{"reset", (*injector).reset},
	{"latency_reset", (*injector).latencyReset},
	{"executor_restart", (*injector).restart},
	{"replication_stall", (*injector).replicationStall},
	{"executor_switch", (*injector).switchExecutor},
	{"latency", (*injector).latency},
	{"executor_restart_lost_replies", (*injector).restartLosingReplies},
	{"long_partition", (*injector).longPartition},
	{"reset", (*injector).reset},
	{"executor_switch_lost_replies", (*injector).switchLosingReplies},
	{"latency_reset", (*injector).latencyReset},
}

// faultKindNames lists the kinds of faultKinds once each, in order.
func faultKindNames() []string {
	var names []string
	for _, k := range faultKinds {
		if !slices.Contains(names, k.name) {
			names = append(names, k.name)
		}
	}
	return names
}

// between returns a random duration in [lo, hi).
func (in *injector) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(in.rng.Int64N(int64(hi-lo)))
}

// run injects faults until ctx ends, then clears every fault. Its error
// means a fault could not be injected or undone: the run is not valid.
func (in *injector) run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, in.clearAll()) }()
	for i := 0; ; i++ {
		// Healthy gaps let the replica catch up and the client reconnect,
		// so that each fault meets a working system.
		if !sleepCtx(ctx, in.between(300*time.Millisecond, 1200*time.Millisecond)) {
			return nil
		}
		k := faultKinds[i%len(faultKinds)]
		start := time.Since(in.t0)
		detail, err := k.inject(in, ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		in.counts[k.name]++
		if detail != "" {
			in.counts[detail]++
		}
		in.events = append(in.events, faultEvent{kind: k.name, start: start, end: time.Since(in.t0)})
		in.done.Add(1)
		in.logf("faults: %6.2fs %s %s", start.Seconds(), k.name, detail)
	}
}

// hold keeps a fault for d; ctx ending only shortens it.
func hold(ctx context.Context, d time.Duration) { sleepCtx(ctx, d) }

// links applies op to the links to both executor instances.
func (in *injector) links(op func(*pgtest.Link) error) error {
	var errs []error
	for _, l := range in.e.execLinks {
		errs = append(errs, op(l))
	}
	return errors.Join(errs...)
}

// reset resets every connection to the executors, and every new one, for a
// moment: the client loses replies of units in flight and must reconnect,
// then learn their outcome by request ID.
func (in *injector) reset(ctx context.Context) (string, error) {
	if err := in.links((*pgtest.Link).ResetPeer); err != nil {
		return "", err
	}
	hold(ctx, in.between(50*time.Millisecond, 500*time.Millisecond))
	return "", in.links((*pgtest.Link).Clear)
}

func setRTT(d time.Duration) func(*pgtest.Link) error {
	return func(l *pgtest.Link) error { return l.SetRTT(d) }
}

// latency adds 200 ms of round trip to the executors for a moment.
func (in *injector) latency(ctx context.Context) (string, error) {
	if err := in.links(setRTT(200 * time.Millisecond)); err != nil {
		return "", err
	}
	hold(ctx, in.between(500*time.Millisecond, 1500*time.Millisecond))
	return "", in.links(setRTT(0))
}

// latencyReset slows the executor links, then resets them while requests
// and replies are in flight in them: units commit on the primary and their
// replies are lost, so clients must ask again by request ID.
func (in *injector) latencyReset(ctx context.Context) (string, error) {
	if err := in.links(setRTT(200 * time.Millisecond)); err != nil {
		return "", err
	}
	hold(ctx, in.between(300*time.Millisecond, 800*time.Millisecond))
	if err := in.links((*pgtest.Link).ResetPeer); err != nil {
		return "", err
	}
	hold(ctx, in.between(50*time.Millisecond, 400*time.Millisecond))
	return "", errors.Join(in.links((*pgtest.Link).Clear), in.links(setRTT(0)))
}

// nextInstance picks the instance a restart or a switch acts on, in turn.
func (in *injector) nextInstance() int {
	in.turn++
	return in.turn % len(in.e.execs)
}

// restart closes one executor instance and starts a new one on the same
// address. Down times on both sides of the client's ConnectWait (1 s) give
// both "reconnected in time" (or to the other instance) and "unavailable".
func (in *injector) restart(ctx context.Context) (string, error) {
	return "", in.e.restartExecutor(ctx, in.nextInstance(), in.between(0, 1500*time.Millisecond))
}

// restartLosingReplies loses the replies in flight in slow links, then
// restarts an executor instance: the clients' retries reach a new instance,
// or the other one, which cannot know the first attempts' outcomes and
// must say so (in doubt) unless the durable table tells.
func (in *injector) restartLosingReplies(ctx context.Context) (string, error) {
	if err := in.links(setRTT(200 * time.Millisecond)); err != nil {
		return "", err
	}
	hold(ctx, in.between(300*time.Millisecond, 800*time.Millisecond))
	if err := in.links((*pgtest.Link).ResetPeer); err != nil {
		return "", err
	}
	err := in.e.restartExecutor(ctx, in.nextInstance(), in.between(0, 500*time.Millisecond))
	return "", errors.Join(err, in.links((*pgtest.Link).Clear), in.links(setRTT(0)))
}

// switchExecutor makes one instance unreachable (connections refused) for
// a moment: a client connected to it moves to the other one.
func (in *injector) switchExecutor(ctx context.Context) (string, error) {
	l := in.e.execLinks[in.nextInstance()]
	if err := l.Cut(); err != nil {
		return "", err
	}
	hold(ctx, in.between(500*time.Millisecond, 2*time.Second))
	return "", l.Restore()
}

// switchLosingReplies slows both instances, then cuts one while replies
// are in flight: units that committed there are retried on the other
// instance, which never saw them.
func (in *injector) switchLosingReplies(ctx context.Context) (string, error) {
	if err := in.links(setRTT(200 * time.Millisecond)); err != nil {
		return "", err
	}
	hold(ctx, in.between(300*time.Millisecond, 800*time.Millisecond))
	l := in.e.execLinks[in.nextInstance()]
	if err := l.Cut(); err != nil {
		return "", err
	}
	if err := in.links(setRTT(0)); err != nil {
		return "", err
	}
	hold(ctx, in.between(500*time.Millisecond, 2*time.Second))
	return "", l.Restore()
}

// longPartition makes both executors unreachable (a black hole: the
// connections stay open, data vanishes) for longer than their
// DedupWindow: a unit that committed before it must not be retried or
// resolved into a second run or a false "not committed" afterwards.
func (in *injector) longPartition(ctx context.Context) (string, error) {
	if err := in.links((*pgtest.Link).Blackhole); err != nil {
		return "", err
	}
	hold(ctx, faultsDedupWindow+in.between(2*time.Second, 5*time.Second))
	return "", in.links((*pgtest.Link).Clear)
}

// replicationStall breaks the replica's replication for longer than the
// app's AwaitTimeout, alternately as a black hole (the connection stays
// open, data vanishes) and as a cut (connections refused): writes commit
// but their wait times out.
func (in *injector) replicationStall(ctx context.Context) (string, error) {
	l := in.e.replLink
	d := faultsAwaitTimeout + in.between(500*time.Millisecond, 1500*time.Millisecond)
	if in.counts["replication_stall"]%2 == 0 {
		if err := l.Blackhole(); err != nil {
			return "", err
		}
		hold(ctx, d)
		return "replication_blackhole", l.Clear()
	}
	if err := l.Cut(); err != nil {
		return "", err
	}
	hold(ctx, d)
	return "replication_cut", l.Restore()
}

// clearAll undoes every fault the injector can make; an executor lost to a
// failed restart is started again.
func (in *injector) clearAll() error {
	e := in.e
	errs := []error{in.links((*pgtest.Link).Restore), in.links((*pgtest.Link).Clear), in.links(setRTT(0)), e.replLink.Restore(), e.replLink.Clear()}
	for i := range e.execs {
		if e.execs[i] == nil {
			lis, err := listenAgain(e.execAddrs[i])
			if err == nil {
				e.execs[i], err = e.startExecutor(lis)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
