package forward

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// clientTx is a forwarded transaction, opened with its first statement
// (BEGIN travels with it) on one primary connection until COMMIT or
// ROLLBACK: on a Tx stream of its own, or on the stream of the pinned
// connection it runs in (see txLink).
type clientTx struct {
	c         *Client
	link      txLink
	ctx       context.Context // BeginTx's: lives as long as the transaction, holds the Receipt
	isolation string
	readOnly  bool
	id        []byte
	commitAt  time.Time // when COMMIT left (alone or with the last statement)
	done      func()    // the connection forgets the transaction

	opened    bool  // the first statement went out
	broken    error // set once the stream failed; the transaction is over
	committed bool  // committed together with its last statement
	commitErr error // COMMIT failed after the last statement, whose result was returned
	reading   bool  // a statement's result is still arriving in parts
}

type lastKey struct{}

// LastStatement marks ctx for a statement that is known to be the last of
// its forwarded transaction: the driver sends it together with COMMIT, so
// the transaction costs one round trip less (BEGIN, the statement and
// COMMIT in one when it is also the first). The transaction's Commit then
// only reports the outcome; Rollback fails with ErrAlreadyCommitted, and
// further statements fail. Outside a forwarded transaction the mark has
// no effect.
func LastStatement(ctx context.Context) context.Context {
	return context.WithValue(ctx, lastKey{}, true)
}

func isLast(ctx context.Context) bool {
	v, _ := ctx.Value(lastKey{}).(bool)
	return v
}

// ErrAlreadyCommitted: Rollback or a statement on a transaction that
// already committed with a LastStatement.
var ErrAlreadyCommitted = errors.New("transaction already committed with its last statement")

type txReply struct {
	resp *forwardpb.TxResponse
	err  error
}

func (t *clientTx) target() string { return t.c.cfg.Target }

func (t *clientTx) fail(op string, kind, err error) error {
	return &Error{Op: op, Target: t.target(), RequestID: hex.EncodeToString(t.id), Kind: kind, Err: err}
}

// errBusy is the error of a statement sent while the transaction's
// previous result is still being read, as pgx's "conn busy".
var errConnBusy = errors.New("forward: conn busy: the transaction's previous result is still being read; close its rows first")

// statement sends one statement and waits for its result, under the
// statement's own context: if that ends first, the transaction is aborted
// (the primary rolls it back), as a cancelled query aborts a direct one.
func (t *clientTx) statement(ctx context.Context, st *forwardpb.Statement) (*answer, error) {
	if t.broken != nil {
		return nil, t.broken
	}
	if t.committed || t.commitErr != nil {
		return nil, t.fail("tx", ErrAlreadyCommitted, nil)
	}
	if t.reading {
		return nil, errConnBusy
	}
	last := isLast(ctx)
	if last {
		t.commitAt = time.Now()
	}
	switch {
	case last && !t.opened && t.isolation == "" && !t.readOnly && !onPin(t.link):
		// A transaction of one statement is an autocommit statement (on
		// any primary connection, unless the transaction's is pinned).
		return t.single(ctx, st)
	case !t.opened:
		t.opened = true
		t.c.units.Add(1)
		begin := &forwardpb.TxBegin{Unit: t.c.unit(t.id, 1, ""), Isolation: t.isolation, ReadOnly: t.readOnly, First: st, Commit: last}
		if err := t.c.checkSend(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: begin}}); err != nil {
			return nil, t.breakOff("tx", ErrTooLarge, err)
		}
		if kind, err := t.link.open(ctx, t.ctx, begin); err != nil {
			return nil, t.breakOff("tx", kind, err)
		}
	case last:
		if err := t.send(ctx, &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Last{Last: st}}); err != nil {
			// Not transmitted: no COMMIT reached the executor.
			return nil, err
		}
	default:
		if err := t.send(ctx, &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Statement{Statement: st}}); err != nil {
			return nil, err
		}
	}
	t.c.rpcs.Add(1)
	ReceiptFrom(t.ctx).roundTrip()
	if last {
		// COMMIT has left with the statement: without an answer the
		// transaction may have committed, so losing it is not an abort.
		r, err := t.awaitReply(ctx)
		if err != nil {
			res, err := t.settle(ctx, "tx", err)
			if err != nil {
				return nil, err
			}
			return &answer{res: res}, nil
		}
		return t.lastReply(ctx, r)
	}
	r, err := t.await(ctx)
	if err != nil {
		return nil, err
	}
	switch o := r.GetOutcome().(type) {
	case *forwardpb.TxResponse_Result:
		if o.Result.GetMore() {
			return t.parts(ctx, o.Result, false), nil
		}
		return &answer{res: o.Result}, nil
	case *forwardpb.TxResponse_Error:
		return nil, wire.PgErrorFromProto(o.Error)
	}
	return nil, t.breakOff("tx", ErrProtocol, fmt.Errorf("unexpected reply %T to a statement", r.GetOutcome()))
}

// send sends a statement of the open transaction; on failure it breaks
// the transaction off (nothing of m reached the executor) and returns why.
func (t *clientTx) send(ctx context.Context, m *forwardpb.TxRequest) error {
	if err := t.c.checkSend(m); err != nil {
		return t.breakOff("tx", ErrTooLarge, err)
	}
	if err := t.link.send(m); err != nil {
		return t.breakOff("tx", ErrTxAborted, withCtxErr(t.link.recvError(err), ctx, t.ctx))
	}
	return nil
}

// lastReply handles the answer to a statement sent with COMMIT.
func (t *clientTx) lastReply(ctx context.Context, r *forwardpb.TxResponse) (*answer, error) {
	if res := r.GetResult(); res.GetMore() {
		return t.parts(ctx, res, true), nil
	}
	res, err := t.lastOutcome(r)
	if err != nil {
		return nil, err
	}
	return &answer{res: res}, nil
}

// lastOutcome handles the outcome of a last statement: its result (its
// last part) and its commit, or its failure.
func (t *clientTx) lastOutcome(r *forwardpb.TxResponse) (*forwardpb.Result, error) {
	t.close()
	switch o := r.GetOutcome().(type) {
	case *forwardpb.TxResponse_Committed:
		ReceiptFrom(t.ctx).commit(lsn.LSN(o.Committed.GetCommitLsn()))
		t.committed = true
		return o.Committed.GetResult(), nil
	case *forwardpb.TxResponse_Error:
		// The executor rolled back and ended the transaction.
		pe := wire.PgErrorFromProto(o.Error)
		if res := r.GetLastResult(); res != nil {
			// The statement ran and its COMMIT failed (a deferred
			// constraint): its result goes to the caller, and Commit
			// reports the failure, as with plain GORM over pgx.
			t.commitErr = pe
			return res, nil
		}
		t.broken = pe
		return nil, pe
	}
	t.broken = t.fail("tx", ErrInDoubt, fmt.Errorf("unexpected reply %T to a last statement", r.GetOutcome()))
	return nil, t.broken
}

// parts continues a result that arrives in parts on the transaction's
// stream (see answer). Until its last part the transaction is busy.
func (t *clientTx) parts(ctx context.Context, first *forwardpb.Result, last bool) *answer {
	t.reading = true
	next := func() (*forwardpb.Result, error) {
		if !t.reading {
			return nil, errors.New("forward: the result has ended")
		}
		var r *forwardpb.TxResponse
		var err error
		if last {
			if r, err = t.awaitReply(ctx); err != nil {
				t.reading = false
				if _, err = t.settle(ctx, "tx", err); err == nil {
					err = &CommittedError{Op: "tx", RequestID: hex.EncodeToString(t.id), LSN: ReceiptFrom(t.ctx).LSN(), Reason: "the rest of its result was lost"}
				}
				return nil, err
			}
		} else if r, err = t.await(ctx); err != nil {
			t.reading = false
			return nil, err
		}
		if res := r.GetResult(); res != nil && (res.GetMore() || !last) {
			t.reading = res.GetMore()
			return res, nil
		}
		t.reading = false
		if last {
			return t.lastOutcome(r)
		}
		if e := r.GetError(); e != nil {
			return nil, wire.PgErrorFromProto(e)
		}
		return nil, t.breakOff("tx", ErrProtocol, fmt.Errorf("unexpected reply %T to a statement", r.GetOutcome()))
	}
	discard := func() error {
		if err := t.link.send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Discard{Discard: &forwardpb.TxDiscard{}}}); err != nil {
			t.reading = false
			return t.breakOff("tx", ErrTxAborted, withCtxErr(t.link.recvError(err), ctx, t.ctx))
		}
		for t.reading {
			if _, err := next(); !t.reading {
				return err
			}
		}
		return nil
	}
	return &answer{res: first, next: next, discard: discard}
}

// settle learns what became of a transaction whose COMMIT (alone or with
// its last statement) left without an answer: from the stream's trailer
// when the executor said, otherwise by asking about the request ID, as a
// statement's retries would: until the client's Timeout (if set) after
// COMMIT left, the caller's deadline, or protocol.RetryHorizon, whichever comes
// first; then it is in doubt. It never reports a commit it cannot know as
// an abort.
func (t *clientTx) settle(ctx context.Context, op string, cause error) (*forwardpb.Result, error) {
	t.close()
	rcpt := ReceiptFrom(t.ctx)
	switch protocol.ReadTrailer(t.link.trailer()).Outcome {
	case protocol.OutcomeNotRun:
		t.broken = t.fail(op, ErrTxAborted, cause)
		return nil, t.broken
	case protocol.OutcomeUnknown:
		t.broken = t.fail(op, ErrInDoubt, cause)
		return nil, t.broken
	}
	c := t.c
	horizon := protocol.RetryHorizon
	if c.cfg.Timeout > 0 {
		horizon = min(c.cfg.Timeout, protocol.RetryHorizon)
	}
	out, commitLSN, res, err := c.learn(ctx, t.id, t.link.conn(), t.commitAt.Add(horizon), rcpt)
	switch out {
	case OutcomeCommitted:
		rcpt.commit(commitLSN)
		t.committed = true
		if res == nil && op == "tx" {
			// Committed, but the statement's result is gone.
			t.broken = &CommittedError{Op: op, RequestID: hex.EncodeToString(t.id), LSN: commitLSN, Reason: "the reply was lost and the executor no longer holds the result"}
			return nil, t.broken
		}
		return res, nil
	case OutcomeNotCommitted:
		t.broken = t.fail(op, ErrTxAborted, fmt.Errorf("the executor rolled the transaction back (%v)", cause))
		return nil, t.broken
	case OutcomeUnknown:
		t.broken = t.fail(op, ErrInDoubt, fmt.Errorf("the executor that ran the transaction is gone (%v)", cause))
		return nil, t.broken
	}
	if err == nil {
		err = cause
	}
	t.broken = t.fail(op, ErrInDoubt, withCtxErr(err, ctx))
	return nil, t.broken
}

// single runs a transaction's only statement as one autocommit unit, with
// the transaction's request ID, and records the commit in the BeginTx
// context's Receipt. Its COMMIT failing after its result (a deferred
// constraint) is reported by Commit, as for a transaction.
func (t *clientTx) single(ctx context.Context, st *forwardpb.Statement) (*answer, error) {
	t.opened = true
	return t.link.lone(ctx, st, t.id, ReceiptFrom(t.ctx), func(err error, atCommit bool) error {
		switch {
		case err == nil:
			t.committed = true
		case atCommit:
			t.commitErr = err
			return nil
		default:
			t.broken = err
		}
		return err
	})
}

// awaitReply waits for the next reply under ctx and the client's timeout,
// leaving the stream as it is when none comes.
func (t *clientTx) awaitReply(ctx context.Context) (*forwardpb.TxResponse, error) {
	wctx, cancel := t.c.unitContext(ctx)
	defer cancel()
	select {
	case r := <-t.link.replies():
		if r.err != nil {
			return nil, withCtxErr(r.err, ctx, t.ctx)
		}
		t.c.inst.note(t.link.conn(), r.resp.GetInstance())
		return r.resp, nil
	case <-wctx.Done():
		return nil, withCtxErr(wctx.Err(), ctx)
	}
}

// await waits for the next reply under ctx and the client's timeout.
func (t *clientTx) await(ctx context.Context) (*forwardpb.TxResponse, error) {
	wctx, cancel := t.c.unitContext(ctx)
	defer cancel()
	select {
	case r := <-t.link.replies():
		if r.err != nil {
			return nil, t.breakOff("tx", ErrTxAborted, withCtxErr(r.err, ctx, t.ctx))
		}
		t.c.inst.note(t.link.conn(), r.resp.GetInstance())
		return r.resp, nil
	case <-wctx.Done():
		err := wctx.Err()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, t.breakOff("tx", ErrTxAborted, err)
	}
}

// withCtxErr lets errors.Is see a context's end behind a stream error
// that it caused (gRPC reports it as a status, not as the context's error).
func withCtxErr(err error, ctxs ...context.Context) error {
	for _, c := range ctxs {
		if cerr := c.Err(); cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("%w (%v)", cerr, err)
		}
	}
	// The executor enforces the deadline too (gRPC sends it along) and may
	// end the stream a moment before the local context notices.
	if status.Code(err) == codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// breakOff ends the stream after a failure before COMMIT: the executor
// rolls the transaction back when its stream ends.
func (t *clientTx) breakOff(op string, kind, err error) error {
	e := &Error{Op: op, Target: t.target(), RequestID: hex.EncodeToString(t.id), Kind: kind, Err: err}
	t.broken = e
	t.reading = false
	t.link.close(true)
	// The stream is over: its trailer names the executor limit that ended
	// the transaction, if one did.
	e.Limit = protocol.ReadTrailer(t.link.trailer()).Limit
	return t.broken
}

// close ends the transaction's use of its stream.
func (t *clientTx) close() { t.link.close(false) }

func (t *clientTx) abort() { t.link.close(true) }

// Commit sends COMMIT and records the commit LSN in the Receipt of the
// BeginTx context. When the reply is lost it asks the executor what became
// of the transaction, by request ID, until the client's timeout.
func (t *clientTx) Commit() error {
	defer t.done()
	switch {
	case t.commitErr != nil:
		return t.commitErr
	case t.committed:
		return nil
	case t.broken != nil:
		return t.broken
	case !t.opened:
		return nil // no statement ran: nothing to commit
	}
	defer t.close()
	rcpt := ReceiptFrom(t.ctx)
	t.commitAt = time.Now()
	if err := t.link.send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Commit{Commit: &forwardpb.TxCommit{}}}); err != nil {
		// Not transmitted: the executor rolls back when the stream ends.
		return t.fail("commit", ErrTxAborted, withCtxErr(t.link.recvError(err), t.ctx))
	}
	t.c.rpcs.Add(1)
	rcpt.roundTrip()
	r, err := t.awaitReply(t.ctx)
	if err != nil {
		_, err := t.settle(t.ctx, "commit", err)
		return err
	}
	switch o := r.GetOutcome().(type) {
	case *forwardpb.TxResponse_CommitLsn:
		rcpt.commit(lsn.LSN(o.CommitLsn))
		return nil
	case *forwardpb.TxResponse_RolledBack:
		return pgx.ErrTxCommitRollback
	case *forwardpb.TxResponse_Error:
		return wire.PgErrorFromProto(o.Error)
	}
	return t.fail("commit", ErrInDoubt, fmt.Errorf("unexpected reply %T to COMMIT", r.GetOutcome()))
}

// rollbackWait bounds how long Rollback waits for the executor to confirm
// (it confirms once the primary rolled back); keepalive detects a dead
// executor sooner.
const rollbackWait = 30 * time.Second

// Rollback ends the transaction. If the stream already broke, the executor
// has rolled back on its own.
func (t *clientTx) Rollback() error {
	defer t.done()
	if t.committed {
		var ce *CommittedError
		if errors.As(t.broken, &ce) {
			// The last statement already failed with "committed"; say so
			// again, typed: callers such as GORM keep only the last
			// error's type when they join a statement's and a rollback's.
			return t.broken
		}
		return t.fail("rollback", ErrAlreadyCommitted, nil)
	}
	if t.broken != nil || t.commitErr != nil || !t.opened {
		return nil
	}
	defer t.close()
	if err := t.link.send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Rollback{Rollback: &forwardpb.TxRollback{}}}); err != nil {
		return nil // the stream is gone: so is the transaction
	}
	t.c.rpcs.Add(1)
	timer := time.NewTimer(rollbackWait)
	defer timer.Stop()
	// Wait for the acknowledgement so that the primary has released the
	// transaction's locks before the caller goes on.
	select {
	case <-t.link.replies():
	case <-timer.C:
	}
	return nil
}
