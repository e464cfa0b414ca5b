package executor

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/flypg/flypg/lsn"
	"google.golang.org/protobuf/proto"
)

// The ledger is the executor's memory of recent units by request ID. It
// makes a retry after a lost reply return the first attempt's answer
// instead of running the unit twice.
//
// Window and limits:
//   - An entry lives while its unit runs and for DedupWindow after it
//     finished, in this executor process only. It does not survive an
//     executor restart and is not shared between executor instances.
//     Both cases are detected rather than guessed: a retry names the
//     instance it believes ran the first attempt, and an executor that does
//     not know the ID runs it only if that instance is itself (then the
//     first attempt never arrived); otherwise it answers "unknown" and the
//     client reports the write as in doubt.
//   - Clients stop retrying and resolving protocol.RetryHorizon after their first
//     attempt, and New refuses a DedupWindow shorter than
//     MinDedupWindow, so an entry is never forgotten while a retry for it
//     may still be answered.
//   - Expiry runs on the monotonic clock: a step of the wall clock neither
//     forgets entries early nor keeps them late.
//   - Memory is bounded by DedupMaxBytes: every entry is charged
//     entryOverhead plus its kept answer (marshaled). Entries are never
//     dropped early: when the budget is used up, new units are refused as
//     busy (back-pressure) until old entries expire; an answer that does not
//     fit is not kept (a retry then learns only that the unit committed,
//     and at which LSN), as for answers over MaxReplayBytes.

type outcome int

const (
	running      outcome = iota
	committed            // committed at lsn
	notCommitted         // failed or rolled back
	unknown              // the primary connection broke during COMMIT
	// recorded: the connection broke, but the unit's request ID went with
	// it into the durable deduplication table, which settles the outcome:
	// a retry runs it again (the ID's insert waits for, then refuses, a
	// first attempt that committed) and Resolve asks the table.
	recorded
)

// answerKind says which reply a kept answer is.
type answerKind uint8

const (
	answerNone answerKind = iota
	answerExec
	answerCall
	answerTx
)

// entryOverhead is what an entry costs beyond its kept answer: the entry
// itself, its ID, its map slot and its queue slot (measured with
// TestLedgerEntryCost).
const entryOverhead = 192

type ledgerEntry struct {
	id       string
	state    outcome
	was      outcome // the state a re-run started from: a re-run of a recorded entry that learns nothing leaves it recorded
	kind     answerKind
	tomb     bool // declared not committed by Resolve: never runs
	lsn      lsn.LSN
	answer   []byte        // the marshaled reply to replay, if kept
	finished time.Time     // zero while never finished
	cost     int           // bytes charged against the budget
	done     chan struct{} // made by the first waiter; closed when state leaves running
}

var errLedgerFull = errors.New("too many recent units held for deduplication")

type ledger struct {
	window    time.Duration
	maxBytes  int
	maxReplay int

	mu      sync.Mutex
	entries map[string]*ledgerEntry
	peak    int            // the most entries the map held since it was made
	queue   []*ledgerEntry // finished entries, oldest first
	used    int            // bytes charged
}

func newLedger(window time.Duration, maxBytes, maxReplay int) *ledger {
	return &ledger{window: window, maxBytes: maxBytes, maxReplay: maxReplay, entries: map[string]*ledgerEntry{}}
}

// begin registers id as running and returns its entry with fresh == true:
// the caller runs the unit and must finish or forget the entry. If id is
// known and its unit may have had an effect (running, committed, unknown,
// failed with a kept answer, or tombstoned) it returns that entry with
// fresh == false: the caller must not run the unit again. An entry that
// finished without committing and without a kept answer, or whose outcome
// the durable table settles, is run again.
func (l *ledger) begin(id string, now time.Time) (e *ledgerEntry, fresh bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	if e, ok := l.entries[id]; ok {
		if !e.tomb && ((e.state == notCommitted && e.answer == nil) || e.state == recorded) {
			e.was = e.state
			e.state = running
			e.done = nil
			return e, true, nil
		}
		return e, false, nil
	}
	cost := entryOverhead + len(id)
	if l.used+cost > l.maxBytes {
		return nil, false, errLedgerFull
	}
	e = &ledgerEntry{id: id, cost: cost}
	l.used += cost
	l.entries[id] = e
	l.peak = max(l.peak, len(l.entries))
	return e, true, nil
}

// lookup returns the entry for id, or nil.
func (l *ledger) lookup(id string, now time.Time) *ledgerEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	return l.entries[id]
}

// view is a consistent copy of an entry's outcome.
type view struct {
	state  outcome
	tomb   bool
	lsn    lsn.LSN
	kind   answerKind
	answer []byte
}

// view returns e's outcome as it is now.
func (l *ledger) view(e *ledgerEntry) view {
	l.mu.Lock()
	defer l.mu.Unlock()
	return view{state: e.state, tomb: e.tomb, lsn: e.lsn, kind: e.kind, answer: e.answer}
}

// keep marshals a reply to be kept with its entry; nil keeps nothing.
func keep(kind answerKind, m proto.Message) (answerKind, []byte) {
	if m == nil {
		return answerNone, nil
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return answerNone, nil
	}
	return kind, b
}

// finish records the outcome of a running entry and wakes its waiters.
// A nil answer after notCommitted lets a retry run the unit again.
func (l *ledger) finish(e *ledgerEntry, state outcome, at lsn.LSN, kind answerKind, answer []byte, now time.Time) {
	if len(answer) > l.maxReplay {
		kind, answer = answerNone, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.state != running {
		return
	}
	requeue := !e.finished.IsZero() // a re-run entry is already queued
	if e.was == recorded && state == notCommitted && answer == nil {
		state = recorded
	}
	l.used -= len(e.answer)
	e.cost -= len(e.answer)
	if answer != nil && l.used+len(answer) > l.maxBytes {
		kind, answer = answerNone, nil // the budget keeps the entry, not its answer
	}
	l.used += len(answer)
	e.cost += len(answer)
	e.state, e.lsn, e.kind, e.answer, e.finished = state, at, kind, answer, now
	if e.done != nil {
		close(e.done)
	}
	if !requeue {
		l.queue = append(l.queue, e)
	}
}

// tombstone records that a Resolve declared id not committed: a unit with
// that ID that arrives later is refused, never run. It returns false if
// id is known after all (the caller answers from that entry instead).
func (l *ledger) tombstone(id string, now time.Time) (*ledgerEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	if e, ok := l.entries[id]; ok {
		return e, false
	}
	cost := entryOverhead + len(id)
	if l.used+cost > l.maxBytes {
		return nil, false
	}
	e := &ledgerEntry{id: id, state: notCommitted, tomb: true, finished: now, cost: cost}
	l.used += cost
	l.entries[id] = e
	l.peak = max(l.peak, len(l.entries))
	l.queue = append(l.queue, e)
	return e, true
}

// forget drops a running entry whose unit never started, so that a retry
// may run it and so that refused requests take no room.
func (l *ledger) forget(e *ledgerEntry, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.state != running {
		return
	}
	e.state = notCommitted
	if e.was == recorded {
		e.state = recorded // the earlier attempt is still unsettled
	}
	if e.done != nil {
		close(e.done)
	}
	if e.finished.IsZero() && l.entries[e.id] == e {
		delete(l.entries, e.id) // never queued: nothing else refers to it
		l.used -= e.cost
	}
}

// expire drops finished entries older than the window.
func (l *ledger) expire(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
}

// expireLocked drops finished entries older than the window, and gives
// back the memory of a map that a burst made large. Caller holds mu.
func (l *ledger) expireLocked(now time.Time) {
	n := 0
	for n < len(l.queue) {
		e := l.queue[n]
		if e.state != running && now.Sub(e.finished) <= l.window {
			break
		}
		if e.state != running {
			delete(l.entries, e.id)
			l.used -= e.cost
		} else {
			// Re-running after a failed attempt: it will be queued again
			// when it finishes.
			e.finished = time.Time{}
		}
		l.queue[n] = nil
		n++
	}
	if n > 0 {
		l.queue = l.queue[n:]
		// The expired front still holds the array: give it back when the
		// queue is empty or mostly so.
		switch {
		case len(l.queue) == 0:
			l.queue = nil
		case cap(l.queue) > 1024 && len(l.queue) < cap(l.queue)/4:
			l.queue = slices.Clone(l.queue)
		}
	}
	// Go maps never shrink: after a burst, copy a mostly empty one.
	if l.peak > 1024 && len(l.entries) < l.peak/8 {
		m := make(map[string]*ledgerEntry, len(l.entries))
		for k, v := range l.entries {
			m[k] = v
		}
		l.entries, l.peak = m, len(m)
	}
}

// wait blocks until e is finished or ctx ends.
func (l *ledger) wait(ctx context.Context, e *ledgerEntry) error {
	l.mu.Lock()
	if e.state != running {
		l.mu.Unlock()
		return nil
	}
	if e.done == nil {
		e.done = make(chan struct{})
	}
	done := e.done
	l.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
