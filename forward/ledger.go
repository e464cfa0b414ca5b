package forward

import (
	"context"
	"errors"
	"sync"
	"time"

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
//   - Clients stop retrying retryHorizon after their first attempt, well
//     inside the window, so an entry is never forgotten while a retry for it
//     may still come.
//   - Entries are never dropped early: when DedupMaxEntries are held, new
//     units are refused as busy (back-pressure) until old entries expire.
//   - Answers larger than MaxReplayBytes are not kept; a retry then learns
//     only that the unit committed, and at which LSN.

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

type ledgerEntry struct {
	id       string
	state    outcome
	lsn      uint64
	answer   proto.Message // the reply to replay, if kept
	finished time.Time
	done     chan struct{} // closed when state leaves running
	// was is the state a re-run started from: a re-run of a recorded
	// entry that learns nothing leaves it recorded, never "not committed".
	was outcome
}

var errLedgerFull = errors.New("too many recent units held for deduplication")

type ledger struct {
	window     time.Duration
	maxEntries int
	maxReplay  int

	mu      sync.Mutex
	entries map[string]*ledgerEntry
	queue   []*ledgerEntry // finished entries, oldest first
}

func newLedger(window time.Duration, maxEntries, maxReplay int) *ledger {
	return &ledger{window: window, maxEntries: maxEntries, maxReplay: maxReplay, entries: map[string]*ledgerEntry{}}
}

// begin registers id as running and returns its entry with fresh == true:
// the caller runs the unit and must finish or forget the entry. If id is
// known and its unit may have had an effect (running, committed, unknown,
// or failed with a kept answer) it returns that entry with fresh == false:
// the caller must not run the unit again. An entry that finished without
// committing and without a kept answer, or whose outcome the durable table
// settles, is run again.
func (l *ledger) begin(id string, now time.Time) (e *ledgerEntry, fresh bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(now)
	if e, ok := l.entries[id]; ok {
		if (e.state == notCommitted && e.answer == nil) || e.state == recorded {
			e.was = e.state
			e.state = running
			e.done = make(chan struct{})
			return e, true, nil
		}
		return e, false, nil
	}
	if len(l.entries) >= l.maxEntries {
		return nil, false, errLedgerFull
	}
	e = &ledgerEntry{id: id, done: make(chan struct{})}
	l.entries[id] = e
	return e, true, nil
}

// lookup returns the entry for id, or nil.
func (l *ledger) lookup(id string, now time.Time) *ledgerEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(now)
	return l.entries[id]
}

// finish records the outcome of a running entry and wakes its waiters.
// A nil answer after notCommitted lets a retry run the unit again.
func (l *ledger) finish(e *ledgerEntry, state outcome, lsn uint64, answer proto.Message, now time.Time) {
	if answer != nil && proto.Size(answer) > l.maxReplay {
		answer = nil
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
	e.state, e.lsn, e.answer, e.finished = state, lsn, answer, now
	close(e.done)
	if !requeue {
		l.queue = append(l.queue, e)
	}
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
	close(e.done)
	if e.finished.IsZero() && l.entries[e.id] == e {
		delete(l.entries, e.id) // never queued: nothing else refers to it
	}
}

// expire drops finished entries older than the window. Caller holds mu.
func (l *ledger) expire(now time.Time) {
	n := 0
	for n < len(l.queue) {
		e := l.queue[n]
		if e.state != running && now.Sub(e.finished) <= l.window {
			break
		}
		if e.state != running {
			delete(l.entries, e.id)
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
	}
}

// wait blocks until e is finished or ctx ends.
func (e *ledgerEntry) wait(ctx context.Context) error {
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
