package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// faultsReportLimit bounds how many writes of each problem the audit logs.
const faultsReportLimit = 10

// audit drains every path a write could still take to the primary, reads
// the primary, and compares it with what each writer was told.
func (e *faultsEnv) audit(ctx context.Context, o options, plan faultsPlan, logs []*writerLog, in *injector) (results, error) {
	// With every fault cleared the replica must catch up again.
	if err := e.cluster.WaitReplicated(ctx); err != nil {
		return nil, fmt.Errorf("replica did not catch up after the faults: %w", err)
	}
	// Nothing may commit after the primary is read: stop the replica-region
	// app, then the executor (it waits for its units), then wait for the
	// primary's backends to go idle (a statement whose client vanished can
	// still be running there).
	e.closeApp()
	e.stopExecutors()
	if err := e.waitPrimaryIdle(ctx); err != nil {
		return nil, err
	}
	counts, err := e.primaryKeys(ctx)
	if err != nil {
		return nil, err
	}
	r := results{"writes_planned_min": float64(plan.minWrites), "writers": float64(plan.writers)}
	t := tallyWrites(logs, counts)
	t.report(r)
	t.logProblems(o, in.events)
	logInDoubt(o, logs, counts, in.events)
	if err := e.auditTransactions(ctx, r); err != nil {
		return nil, err
	}
	r["executor_instances"] = float64(len(e.execs))
	r["executor_processes_started"] = float64(e.started)
	r["dedup_window_ms"] = ms(faultsDedupWindow)
	r["call_writes_attempted"] = r["mode_call_writes"]
	r["faults_injected"] = float64(len(in.events))
	for _, k := range append(faultKindNames(), "replication_blackhole", "replication_cut") {
		r["faults_"+k] = float64(in.counts[k])
	}
	return r, nil
}

// waitPrimaryIdle waits until no other client backend of the primary is
// running a statement.
func (e *faultsEnv) waitPrimaryIdle(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var busy int64
		err := e.admin.WithContext(ctx).Raw(`SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'`).Scan(&busy).Error
		if err != nil {
			return fmt.Errorf("primary activity: %w", err)
		}
		if busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("primary still has %d busy backends after the load", busy)
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// primaryKeys returns how many rows each key of the load has on the
// primary (warm-up rows, writer -1, excluded).
func (e *faultsEnv) primaryKeys(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		Key string
		N   int
	}
	err := e.admin.WithContext(ctx).Raw(`SELECT key, count(*) AS n FROM fault_rows WHERE writer >= 0 GROUP BY key`).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read the primary: %w", err)
	}
	m := make(map[string]int, len(rows))
	for _, x := range rows {
		m[x.Key] = x.N
	}
	return m, nil
}

// auditTransactions checks the multi-statement modes for atomicity: a tx
// row without its UPDATE, an assoc row without its parent or a parent
// without its row means half a transaction committed. Parents' keys are
// unique per write too, so a parent present twice is a duplicate.
func (e *faultsEnv) auditTransactions(ctx context.Context, r results) error {
	var torn, dupParents int64
	err := e.admin.WithContext(ctx).Raw(`SELECT
		(SELECT count(*) FROM fault_rows WHERE mode = 'tx' AND note <> 'tx-updated') +
		(SELECT count(*) FROM fault_rows WHERE mode = 'assoc' AND parent_id IS NULL) +
		(SELECT count(*) FROM fault_parents p WHERE NOT EXISTS (SELECT 1 FROM fault_rows r WHERE r.parent_id = p.id))`).Scan(&torn).Error
	if err != nil {
		return fmt.Errorf("audit transactions: %w", err)
	}
	err = e.admin.WithContext(ctx).Raw(`SELECT count(*) FROM (SELECT key FROM fault_parents GROUP BY key HAVING count(*) > 1) d`).Scan(&dupParents).Error
	if err != nil {
		return fmt.Errorf("audit parents: %w", err)
	}
	r["torn_transactions"] = float64(torn)
	r["duplicates_parents"] = float64(dupParents)
	r["duplicates"] += float64(dupParents)
	return nil
}

// problem is a write whose outcome on the primary contradicts what its
// client was told, or that needs a look.
type problem struct {
	what string
	rec  writeRecord
	rows int
}

// writeTally compares every write with the primary.
type writeTally struct {
	attempted, acked, failed, inDoubt, unclassified int
	lostAcked, duplicates, failedPresent            int
	inDoubtCommitted, inDoubtAbsent, phantoms       int
	staleAfterAck, localReadErr, rowsOnPrimary      int
	kinds                                           map[string]int
	modeWrites, modeInDoubt, modeFailedPresent      []int
	modeMaxStall                                    []time.Duration
	maxStall                                        time.Duration
	lat                                             sample
	problems                                        []problem
}

func tallyWrites(logs []*writerLog, counts map[string]int) *writeTally {
	t := &writeTally{
		kinds:      map[string]int{},
		modeWrites: make([]int, len(faultModes)), modeInDoubt: make([]int, len(faultModes)), modeFailedPresent: make([]int, len(faultModes)),
		modeMaxStall: make([]time.Duration, len(faultModes)),
	}
	for _, n := range counts {
		t.rowsOnPrimary += n
	}
	matched := 0
	for _, l := range logs {
		t.staleAfterAck += l.staleAfterAck
		t.localReadErr += l.localReadErr
		for _, i := range l.staleKeys {
			t.problems = append(t.problems, problem{"acked (nil) but not visible on the local replica", l.recs[i], counts[l.recs[i].key]})
		}
		for _, rec := range l.recs {
			n, ok := counts[rec.key]
			if ok {
				matched++
			}
			t.add(rec, n)
		}
	}
	t.phantoms = len(counts) - matched
	return t
}

// add counts one write that has n rows on the primary.
func (t *writeTally) add(rec writeRecord, n int) {
	t.attempted++
	t.kinds[rec.kind]++
	t.modeWrites[rec.mode]++
	t.lat = append(t.lat, rec.dur)
	t.maxStall = max(t.maxStall, rec.dur)
	t.modeMaxStall[rec.mode] = max(t.modeMaxStall[rec.mode], rec.dur)
	if rec.dur > faultsStallLimit {
		t.problems = append(t.problems, problem{"stall beyond RPCTimeout + AwaitTimeout + 1s", rec, n})
	}
	if n > 1 {
		t.duplicates++
		t.problems = append(t.problems, problem{"duplicate", rec, n})
	}
	switch rec.out {
	case outAcked:
		t.acked++
		if n == 0 {
			t.lostAcked++
			t.problems = append(t.problems, problem{"acked but missing on the primary", rec, n})
		}
	case outFailed:
		t.failed++
		if n > 0 {
			t.failedPresent++
			t.modeFailedPresent[rec.mode]++
			t.problems = append(t.problems, problem{"reported not committed but present", rec, n})
		}
	case outInDoubt, outUnclassified:
		t.inDoubt++
		t.modeInDoubt[rec.mode]++
		if n > 0 {
			t.inDoubtCommitted++
		} else {
			t.inDoubtAbsent++
		}
		if rec.out == outUnclassified {
			t.unclassified++
			t.problems = append(t.problems, problem{"unclassified error", rec, n})
		}
	}
}

func (t *writeTally) report(r results) {
	r["writes_attempted"] = float64(t.attempted)
	r["writes_acked"] = float64(t.acked)
	r["writes_failed"] = float64(t.failed)
	// In doubt includes the unclassified writes: both may have committed.
	r["writes_in_doubt"] = float64(t.inDoubt)
	r["writes_unclassified"] = float64(t.unclassified)
	r["rows_on_primary"] = float64(t.rowsOnPrimary)
	r["lost_acked"] = float64(t.lostAcked)
	r["duplicates"] = float64(t.duplicates)
	r["failed_but_present"] = float64(t.failedPresent)
	r["in_doubt_committed"] = float64(t.inDoubtCommitted)
	r["in_doubt_absent"] = float64(t.inDoubtAbsent)
	r["rows_unknown_key"] = float64(t.phantoms)
	r["acked_not_visible_locally"] = float64(t.staleAfterAck)
	r["local_read_errors"] = float64(t.localReadErr)
	r["max_stall_ms"] = ms(t.maxStall)
	r["write_p50_ms"] = ms(t.lat.percentile(50))
	r["write_p99_ms"] = ms(t.lat.percentile(99))
	for k, n := range t.kinds {
		r["outcome_"+k] = float64(n)
	}
	for i, m := range faultModes {
		r["mode_"+m.name+"_writes"] = float64(t.modeWrites[i])
		r["mode_"+m.name+"_in_doubt"] = float64(t.modeInDoubt[i])
		r["mode_"+m.name+"_failed_but_present"] = float64(t.modeFailedPresent[i])
		r["mode_"+m.name+"_max_stall_ms"] = ms(t.modeMaxStall[i])
	}
}

// logProblems prints the first writes of each problem with their errors
// and the faults active while they ran: what a bug report needs.
func (t *writeTally) logProblems(o options, events []faultEvent) {
	shown := map[string]int{}
	for _, p := range t.problems {
		if shown[p.what]++; shown[p.what] > faultsReportLimit {
			continue
		}
		rec := p.rec
		o.logf("faults: PROBLEM %s: key %s mode %s rows %d, at %.3fs for %v, %s: %v; faults meanwhile: %s",
			p.what, rec.key, faultModes[rec.mode].name, p.rows, rec.start.Seconds(), rec.dur.Round(time.Millisecond),
			rec.kind, rec.err, activeFaults(events, rec.start, rec.start+rec.dur))
	}
	for what, n := range shown {
		if n > faultsReportLimit {
			o.logf("faults: PROBLEM %s: %d more not shown", what, n-faultsReportLimit)
		}
	}
}

// logInDoubt summarises the in-doubt writes by the faults they met and by
// what became of them: in doubt is legitimate when the executor that ran
// a unit is gone, suspicious when only a short reset happened. Each group
// shows one of its errors.
func logInDoubt(o options, logs []*writerLog, counts map[string]int, events []faultEvent) {
	type group struct {
		n       int
		example error
	}
	by := map[string]*group{}
	for _, l := range logs {
		for _, rec := range l.recs {
			if rec.out != outInDoubt && rec.out != outUnclassified {
				continue
			}
			state := "absent"
			if counts[rec.key] > 0 {
				state = "committed"
			}
			kinds := map[string]bool{}
			for _, ev := range events {
				if ev.start <= rec.start+rec.dur && ev.end >= rec.start {
					kinds[ev.kind] = true
				}
			}
			names := slices.Sorted(maps.Keys(kinds))
			if len(names) == 0 {
				names = []string{"no fault"}
			}
			k := fmt.Sprintf("%s during %s", state, strings.Join(names, "+"))
			if by[k] == nil {
				by[k] = &group{example: rec.err}
			}
			by[k].n++
		}
	}
	for _, k := range slices.Sorted(maps.Keys(by)) {
		o.logf("faults: in doubt, %s: %d (e.g. %v)", k, by[k].n, by[k].example)
	}
}

// activeFaults names the faults that overlapped [from, to].
func activeFaults(events []faultEvent, from, to time.Duration) string {
	var names []string
	for _, ev := range events {
		if ev.start <= to && ev.end >= from {
			names = append(names, fmt.Sprintf("%s %.3f-%.3fs", ev.kind, ev.start.Seconds(), ev.end.Seconds()))
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
