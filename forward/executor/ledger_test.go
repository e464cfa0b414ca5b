package executor

import (
	"context"
	"crypto/rand"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
)

func TestLedger(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newLedger(time.Minute, 3*(entryOverhead+1)+32, 1024) // three entries and a small answer

	e, fresh, err := l.begin("a", t0)
	if err != nil || !fresh {
		t.Fatalf("first begin: fresh=%v err=%v", fresh, err)
	}
	// While it runs, a duplicate must wait for it, not run.
	dup, fresh, _ := l.begin("a", t0)
	if fresh || dup != e {
		t.Fatal("duplicate of a running unit was told to run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	if err := l.wait(ctx, dup); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on a running entry: %v", err)
	}
	cancel()
	k, answer := keep(answerExec, &forwardpb.ExecResponse{CommitLsn: 42})
	l.finish(e, committed, 42, k, answer, t0)
	if err := l.wait(context.Background(), dup); err != nil {
		t.Fatal(err)
	}
	if v := l.view(dup); v.state != committed || string(v.answer) != string(answer) || v.kind != answerExec {
		t.Fatalf("after finish: %+v", v)
	}

	// A unit that failed without a kept answer may run again.
	f, _, _ := l.begin("b", t0)
	l.finish(f, notCommitted, 0, answerNone, nil, t0)
	if _, fresh, _ := l.begin("b", t0); !fresh {
		t.Fatal("a unit that did not commit and kept no answer was not allowed to run again")
	}

	// A unit whose commit is unknown must never run again.
	u, _, _ := l.begin("c", t0)
	l.finish(u, unknown, 0, answerNone, nil, t0)
	if _, fresh, _ := l.begin("c", t0); fresh {
		t.Fatal("a unit with an unknown outcome was allowed to run again")
	}

	// Full: refuse new units rather than forget recent ones early.
	if _, _, err := l.begin("d", t0); !errors.Is(err, errLedgerFull) {
		t.Fatalf("begin on a full ledger: %v", err)
	}
	// After the window the finished entries expire and room returns.
	later := t0.Add(time.Minute + time.Second)
	if l.lookup("a", later) != nil {
		t.Fatal("entry outlived its window")
	}
	if _, fresh, err := l.begin("d", later); err != nil || !fresh {
		t.Fatalf("begin after expiry: %v", err)
	}
	// Large answers are not kept.
	g, _, _ := l.begin("g", later)
	gk, ga := keep(answerExec, &forwardpb.ExecResponse{Result: &forwardpb.Result{Rows: make([]byte, 4096)}})
	l.finish(g, committed, 7, gk, ga, later)
	if g.answer != nil || g.lsn != 7 {
		t.Fatal("an answer over MaxReplayBytes was kept")
	}
}

// TestLedgerRecorded: a unit whose outcome the durable table settles runs
// again on a retry, and a re-run that learns nothing (refused, or failed
// without an answer) leaves it recorded, never "not committed".
func TestLedgerRecorded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		end   func(l *ledger, e *ledgerEntry)
		state outcome
	}{
		{"refused before running", func(l *ledger, e *ledgerEntry) { l.forget(e, t0) }, recorded},
		{"failed with no answer", func(l *ledger, e *ledgerEntry) { l.finish(e, notCommitted, 0, answerNone, nil, t0) }, recorded},
		{"failed with PostgreSQL's answer", func(l *ledger, e *ledgerEntry) {
			k, b := keep(answerExec, &forwardpb.ExecResponse{Error: &forwardpb.PgError{Code: "23505"}})
			l.finish(e, notCommitted, 0, k, b, t0)
		}, notCommitted},
		{"committed", func(l *ledger, e *ledgerEntry) { l.finish(e, committed, 9, answerNone, nil, t0) }, committed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(time.Minute, 1<<20, 1024)
			e, _, _ := l.begin("r", t0)
			l.finish(e, recorded, 0, answerNone, nil, t0)
			again, fresh, err := l.begin("r", t0)
			if err != nil || !fresh || again != e {
				t.Fatalf("retry of a recorded unit: fresh=%v err=%v, want it to run", fresh, err)
			}
			tc.end(l, again)
			if got := l.lookup("r", t0); got == nil || got.state != tc.state {
				t.Fatalf("after the re-run: %v, want state %v", got, tc.state)
			}
		})
	}
}

// TestLedgerEntryCost checks the ledger's memory accounting against the
// heap: what an entry really costs stays near what DedupMaxBytes charges.
func TestLedgerEntryCost(t *testing.T) {
	const n = 20000
	l := newLedger(time.Minute, 1<<30, 1024)
	t0 := time.Now()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = string(id16())
	}
	k, answer := keep(answerExec, &forwardpb.ExecResponse{Result: &forwardpb.Result{RowsAffected: 1, CommandTag: "INSERT 0 1"}, CommitLsn: 1 << 30, Instance: "0123456789abcdef"})
	before := heapNow()
	for _, id := range ids {
		e, _, err := l.begin(id, t0)
		if err != nil {
			t.Fatal(err)
		}
		l.finish(e, committed, 1<<30, k, append([]byte(nil), answer...), t0)
	}
	after := heapNow()
	per := float64(after-before) / n
	charged := float64(l.used) / n
	t.Logf("%.0f bytes per entry on the heap, %.0f charged", per, charged)
	if per > 1.25*charged {
		t.Fatalf("an entry costs %.0f bytes, the budget charges %.0f", per, charged)
	}
	if l.lookup(ids[0], t0) == nil {
		t.Fatal("entry gone")
	}
}

func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func id16() []byte {
	b := make([]byte, 16)
	rand.Read(b)
	return b
}
