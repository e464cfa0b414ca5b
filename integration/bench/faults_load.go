package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
)

// outcome is what the client may conclude about a write from its error.
type outcome int8

const (
	outAcked        outcome = iota // committed (nil, or committed but not replayed yet)
	outFailed                      // the error guarantees that nothing committed
	outInDoubt                     // forward.ErrInDoubt: may have committed
	outUnclassified                // any other error: in doubt too, but should not happen
)

// classify maps a write's error to its outcome and a short kind for the
// per-kind counts. Committed-but-not-replayed errors come first: they
// wrap the wait's error, not a forwarding one. ErrInDoubt is checked
// before the not-committed kinds so that an error carrying both is never
// counted as a safe failure.
func classify(err error) (outcome, string) {
	var (
		rerr    *flypg.ReplicationError
		cerr    *forward.CommittedError
		callErr *forward.CallError
		pg      *pgconn.PgError
	)
	switch {
	case err == nil:
		return outAcked, "ok"
	case errors.Is(err, flypg.ErrReplicationTimeout):
		return outAcked, "replication_timeout"
	case errors.As(err, &rerr):
		return outAcked, "replication_error"
	case errors.As(err, &cerr):
		return outAcked, "committed_error"
	case errors.As(err, &callErr):
		// The function failed: its transaction rolled back.
		return outFailed, "call_failed"
	case errors.Is(err, forward.ErrInDoubt):
		return outInDoubt, "in_doubt"
	case errors.Is(err, forward.ErrUnavailable):
		return outFailed, "unavailable"
	case errors.Is(err, forward.ErrBusy):
		return outFailed, "busy"
	case errors.Is(err, forward.ErrTxAborted):
		return outFailed, "tx_aborted"
	case errors.Is(err, pgx.ErrTxCommitRollback):
		// COMMIT answered with a rollback: nothing committed.
		return outFailed, "rolled_back"
	case errors.As(err, &pg):
		return outFailed, "pg"
	}
	return outUnclassified, "unclassified"
}

// faultModes are the ways a write reaches the executor; each inserts one
// fault_rows row with its key. Writers cycle through them so that every
// forwarding path meets every fault.
var faultModes = []struct {
	name  string
	write func(db *gorm.DB, key string, writer int) error
}{
	// GORM's implicit transaction of one statement: one autocommit unit,
	// retried with its request ID after a lost reply.
	{"create", func(db *gorm.DB, key string, w int) error {
		return db.Create(&faultRow{Key: key, Writer: w, Mode: "create"}).Error
	}},
	// Raw write SQL outside a transaction: the same unit, but database/sql
	// itself retries a never-sent request on another connection.
	{"exec", func(db *gorm.DB, key string, w int) error {
		return db.Exec("INSERT INTO fault_rows (key, writer, mode, note) VALUES (?, ?, 'exec', '')", key, w).Error
	}},
	// An explicit transaction of two statements: a stream, then a COMMIT
	// of its own, resolved by request ID when its reply is lost.
	{"tx", func(db *gorm.DB, key string, w int) error {
		return db.Transaction(func(tx *gorm.DB) error {
			r := faultRow{Key: key, Writer: w, Mode: "tx"}
			if err := tx.Create(&r).Error; err != nil {
				return err
			}
			return tx.Model(&r).Update("note", "tx-updated").Error
		})
	}},
	// A belongs-to association: GORM inserts the parent first, so the row's
	// INSERT is the transaction's last statement and carries the COMMIT.
	{"assoc", func(db *gorm.DB, key string, w int) error {
		return db.Create(&faultRow{Key: key, Writer: w, Mode: "assoc", Parent: &faultParent{Key: key}}).Error
	}},
	// A registered function on the primary (faultCall): its own RPC,
	// retried by request ID, recorded in its own transaction under durable
	// deduplication.
	{"call", func(db *gorm.DB, key string, w int) error {
		_, err := faultCall.Call(db.Statement.Context, db, faultCallIn{Key: key, Writer: w})
		return err
	}},
}

// faultsCallLimit bounds one write from the outside, far above the bound
// the goals check, only so that a hang cannot wedge the run: it shows up as
// a huge max_stall_ms and an unclassified error instead.
const faultsCallLimit = 30 * time.Second

// writeRecord is one write: its key, how it was made, what the client was
// told, and how long the call took.
type writeRecord struct {
	key   string
	mode  int8
	out   outcome
	kind  string
	err   error
	start time.Duration // since the load began
	dur   time.Duration
}

// writerLog is one writer's records and its read-your-writes checks; each
// writer owns its own, so the hot path takes no lock.
type writerLog struct {
	recs          []writeRecord
	staleAfterAck int   // nil-acked writes the local replica did not show
	localReadErr  int   // read-backs that failed
	staleKeys     []int // indexes into recs, for the report
}

// writer writes until stop is closed: one unique key per write, modes in
// turn (offset by writer, so that all modes are in flight at any time).
func (e *faultsEnv) writer(ctx context.Context, id int, t0 time.Time, stop <-chan struct{}, attempted *atomic.Int64, log *writerLog) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		key := fmt.Sprintf("w%02d-%07d", id, i)
		m := (i + id) % len(faultModes)
		wctx, cancel := context.WithTimeout(ctx, faultsCallLimit)
		start := time.Now()
		err := faultModes[m].write(e.app.WithContext(wctx), key, id)
		dur := time.Since(start)
		out, kind := classify(err)
		log.recs = append(log.recs, writeRecord{key: key, mode: int8(m), out: out, kind: kind, err: err, start: start.Sub(t0), dur: dur})
		attempted.Add(1)
		if err == nil {
			e.checkReadYourWrite(wctx, key, log)
		}
		cancel()
		if out == outFailed {
			// Like an application would: pause before the next write
			// rather than hammer an executor that just refused (a failed
			// write fails fast while the executor is down).
			select {
			case <-time.After(faultsFailurePause):
			case <-stop:
			}
		}
	}
}

// faultsFailurePause is how long a writer pauses after a write that
// certainly did not commit.
const faultsFailurePause = 20 * time.Millisecond

// checkReadYourWrite reads a nil-acked key on the local replica: nil
// promises that the replica has replayed the commit.
func (e *faultsEnv) checkReadYourWrite(ctx context.Context, key string, log *writerLog) {
	var n int64
	if err := e.app.WithContext(ctx).Model(&faultRow{}).Where("key = ?", key).Count(&n).Error; err != nil {
		log.localReadErr++
		return
	}
	if n == 0 {
		log.staleAfterAck++
		log.staleKeys = append(log.staleKeys, len(log.recs)-1)
	}
}
