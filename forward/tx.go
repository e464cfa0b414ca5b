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
)

// clientTx is a forwarded transaction: one gRPC stream, opened with the
// first statement (BEGIN travels with it) and pinned by the executor to one
// primary connection until COMMIT or ROLLBACK.
type clientTx struct {
	cn        *conn
	ctx       context.Context // BeginTx's: lives as long as the transaction, holds the Receipt
	isolation string
	readOnly  bool
	id        []byte
	conn      connID    // the connection the transaction's stream runs on
	commitAt  time.Time // when COMMIT left (alone or with the last statement)

	stream    forwardpb.Executor_TxClient
	cancel    context.CancelFunc
	resps     chan txReply
	reader    chan struct{} // closed when the reading goroutine has ended
	broken    error         // set once the stream failed; the transaction is over
	committed bool          // committed together with its last statement
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

func (t *clientTx) target() string { return t.cn.c.cfg.Target }

func (t *clientTx) fail(op string, kind, err error) error {
	return &Error{Op: op, Target: t.target(), RequestID: hex.EncodeToString(t.id), Kind: kind, Err: err}
}

// statement sends one statement and waits for its result, under the
// statement's own context: if that ends first, the transaction is aborted
// (the primary rolls it back), as a cancelled query aborts a direct one.
func (t *clientTx) statement(ctx context.Context, st *forwardpb.Statement) (*forwardpb.Result, error) {
	if t.broken != nil {
		return nil, t.broken
	}
	if t.committed {
		return nil, t.fail("tx", ErrAlreadyCommitted, nil)
	}
	c := t.cn.c
	last := isLast(ctx)
	if last {
		t.commitAt = time.Now()
	}
	switch {
	case last && t.stream == nil && t.isolation == "" && !t.readOnly:
		// A transaction of one statement is an autocommit statement.
		return t.single(ctx, st)
	case t.stream == nil:
		if err := t.open(ctx, st, last); err != nil {
			return nil, err
		}
	case last:
		if err := t.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Last{Last: st}}); err != nil {
			// Not transmitted: no COMMIT reached the executor.
			return nil, t.breakOff("tx", ErrTxAborted, withCtxErr(t.recvError(err), ctx, t.ctx))
		}
	default:
		if err := t.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Statement{Statement: st}}); err != nil {
			return nil, t.breakOff("tx", ErrTxAborted, withCtxErr(t.recvError(err), ctx, t.ctx))
		}
	}
	c.rpcs.Add(1)
	ReceiptFrom(t.ctx).roundTrip()
	if last {
		// COMMIT has left with the statement: without an answer the
		// transaction may have committed, so losing it is not an abort.
		r, err := t.awaitReply(ctx)
		if err != nil {
			return t.settle(ctx, "tx", err)
		}
		return t.lastReply(r)
	}
	r, err := t.await(ctx)
	if err != nil {
		return nil, err
	}
	switch o := r.GetOutcome().(type) {
	case *forwardpb.TxResponse_Result:
		return o.Result, nil
	case *forwardpb.TxResponse_Committed:
		ReceiptFrom(t.ctx).commit(o.Committed.GetCommitLsn())
		t.committed = true
		t.close()
		return o.Committed.GetResult(), nil
	case *forwardpb.TxResponse_Error:
		pe := wire.PgErrorFromProto(o.Error)
		if last {
			// The executor rolled back and ended the transaction.
			t.broken = pe
			t.close()
		}
		return nil, pe
	}
	return nil, t.breakOff("tx", ErrProtocol, fmt.Errorf("unexpected reply %T to a statement", r.GetOutcome()))
}

// lastReply handles the answer to a statement sent with COMMIT.
func (t *clientTx) lastReply(r *forwardpb.TxResponse) (*forwardpb.Result, error) {
	defer t.close()
	switch o := r.GetOutcome().(type) {
	case *forwardpb.TxResponse_Committed:
		ReceiptFrom(t.ctx).commit(o.Committed.GetCommitLsn())
		t.committed = true
		return o.Committed.GetResult(), nil
	case *forwardpb.TxResponse_Error:
		// The statement failed: the executor rolled back and ended the
		// transaction.
		pe := wire.PgErrorFromProto(o.Error)
		t.broken = pe
		return nil, pe
	}
	t.broken = t.fail("tx", ErrInDoubt, fmt.Errorf("unexpected reply %T to a last statement", r.GetOutcome()))
	return nil, t.broken
}

// settle learns what became of a transaction whose COMMIT (alone or with
// its last statement) left without an answer: from the stream's trailer
// when the executor said, otherwise by asking about the request ID, as a
// statement's retries would: until the client's Timeout after COMMIT left,
// the caller's deadline, or RetryHorizon, whichever comes first; then it
// is in doubt. It never reports a commit it cannot know as an abort.
func (t *clientTx) settle(ctx context.Context, op string, cause error) (*forwardpb.Result, error) {
	t.close()
	rcpt := ReceiptFrom(t.ctx)
	if t.stream != nil {
		switch first(t.stream.Trailer(), trailerOutcome) {
		case outcomeNotRun:
			t.broken = t.fail(op, ErrTxAborted, cause)
			return nil, t.broken
		case outcomeUnknown:
			t.broken = t.fail(op, ErrInDoubt, cause)
			return nil, t.broken
		}
	}
	c := t.cn.c
	deadline := t.commitAt.Add(min(c.cfg.Timeout, RetryHorizon))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	// The executor that ran the transaction is the one at the other end
	// of its stream's connection, once known there.
	inst := c.inst.of(t.conn)
	backoff := retryBackoffMin
	lastErr := cause
	for rctx.Err() == nil {
		rcpt.roundTrip()
		if inst == "" {
			inst = c.inst.of(t.conn)
		}
		out, lsn, res, err := c.resolve(rctx, t.id, inst)
		switch {
		case err != nil:
			lastErr = err
		case out == OutcomeCommitted:
			rcpt.commit(lsn)
			t.committed = true
			if res == nil && op == "tx" {
				// Committed, but the statement's result is gone.
				t.broken = &CommittedError{Op: op, RequestID: hex.EncodeToString(t.id), LSN: lsn, Reason: "the reply was lost and the executor no longer holds the result"}
				return nil, t.broken
			}
			return res, nil
		case out == OutcomeNotCommitted:
			t.broken = t.fail(op, ErrTxAborted, fmt.Errorf("the executor rolled the transaction back (%v)", cause))
			return nil, t.broken
		case out == OutcomeUnknown:
			t.broken = t.fail(op, ErrInDoubt, fmt.Errorf("the executor that ran the transaction is gone (%v)", cause))
			return nil, t.broken
		}
		c.retries.Add(1)
		tm := time.NewTimer(backoff)
		select {
		case <-tm.C:
		case <-rctx.Done():
			tm.Stop()
		}
		backoff = min(backoff*2, retryBackoffMax)
	}
	t.broken = t.fail(op, ErrInDoubt, withCtxErr(lastErr, ctx))
	return nil, t.broken
}

// single runs a transaction's only statement as one autocommit unit, with
// the transaction's request ID, and records the commit in the BeginTx
// context's Receipt.
func (t *clientTx) single(ctx context.Context, st *forwardpb.Statement) (*forwardpb.Result, error) {
	res, err := t.cn.c.execUnit(ctx, "tx", st, t.id, ReceiptFrom(t.ctx))
	if err != nil {
		t.broken = err
		return nil, err
	}
	t.committed = true
	return res, nil
}

// open starts the stream with BEGIN and the first statement, and COMMIT
// after it when it is also the last.
func (t *clientTx) open(ctx context.Context, st *forwardpb.Statement, last bool) error {
	c := t.cn.c
	c.units.Add(1)
	if err := c.awaitReady(ctx); err != nil {
		return t.breakOff("tx", ErrUnavailable, err)
	}
	sctx, cancel := context.WithCancel(t.ctx)
	// Opening the stream is bounded by the statement's time.
	octx, ocancel := c.unitContext(ctx)
	defer ocancel()
	type opened struct {
		s   forwardpb.Executor_TxClient
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := c.api.Tx(sctx)
		ch <- opened{s, err}
	}()
	var o opened
	select {
	case o = <-ch:
	case <-octx.Done():
		cancel()
		o = <-ch
		if o.err == nil {
			o.err = octx.Err()
		}
	}
	if o.err != nil {
		cancel()
		// Opening a stream sends nothing that could run: safe.
		return t.breakOff("tx", ErrUnavailable, o.err)
	}
	t.stream, t.cancel = o.s, cancel
	t.conn = connOfStream(o.s.Context())
	begin := &forwardpb.TxBegin{
		Unit:      c.unit(t.id, 1, ""),
		Isolation: t.isolation,
		ReadOnly:  t.readOnly,
		First:     st,
		Commit:    last,
	}
	t.resps = make(chan txReply, 1)
	t.reader = make(chan struct{})
	go t.read()
	// A failed Send transmitted nothing: the executor never saw a COMMIT
	// and rolls back whatever it began when the stream ends.
	if err := t.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: begin}}); err != nil {
		return t.breakOff("tx", ErrTxAborted, withCtxErr(t.recvError(err), ctx, t.ctx))
	}
	return nil
}

// read receives the stream's replies until it ends; one reply is pending
// at a time, since the client waits for each before sending the next.
func (t *clientTx) read() {
	defer close(t.reader)
	for {
		r, err := t.stream.Recv()
		t.resps <- txReply{r, err}
		if err != nil {
			return
		}
	}
}

// recvError returns the stream's real error after Send failed: gRPC reports
// only io.EOF from Send and keeps the status for Recv.
func (t *clientTx) recvError(sendErr error) error {
	select {
	case r := <-t.resps:
		if r.err != nil {
			return r.err
		}
	case <-time.After(time.Second):
	}
	return sendErr
}

// awaitReply waits for the next reply under ctx and the client's timeout,
// leaving the stream as it is when none comes.
func (t *clientTx) awaitReply(ctx context.Context) (*forwardpb.TxResponse, error) {
	wctx, cancel := t.cn.c.unitContext(ctx)
	defer cancel()
	select {
	case r := <-t.resps:
		if r.err != nil {
			return nil, withCtxErr(r.err, ctx, t.ctx)
		}
		t.cn.c.inst.note(t.conn, r.resp.GetInstance())
		return r.resp, nil
	case <-wctx.Done():
		return nil, withCtxErr(wctx.Err(), ctx)
	}
}

// await waits for the next reply under ctx and the client's timeout.
func (t *clientTx) await(ctx context.Context) (*forwardpb.TxResponse, error) {
	wctx, cancel := t.cn.c.unitContext(ctx)
	defer cancel()
	select {
	case r := <-t.resps:
		if r.err != nil {
			return nil, t.breakOff("tx", ErrTxAborted, withCtxErr(r.err, ctx, t.ctx))
		}
		t.cn.c.inst.note(t.conn, r.resp.GetInstance())
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
	t.broken = t.fail(op, kind, err)
	t.close()
	return t.broken
}

// close cancels the stream and waits for the reading goroutine.
func (t *clientTx) close() {
	if t.cancel == nil {
		return
	}
	t.cancel()
	t.cancel = nil
	if t.reader == nil {
		return
	}
	for {
		select {
		case <-t.reader:
			return
		case <-t.resps: // drop, so that the reader can finish
		}
	}
}

func (t *clientTx) abort() { t.close() }

func (t *clientTx) done() { t.cn.tx = nil }

// Commit sends COMMIT and records the commit LSN in the Receipt of the
// BeginTx context. When the reply is lost it asks the executor what became
// of the transaction, by request ID, until the client's timeout.
func (t *clientTx) Commit() error {
	defer t.done()
	if t.committed {
		return nil
	}
	if t.broken != nil {
		return t.broken
	}
	if t.stream == nil {
		return nil // no statement ran: nothing to commit
	}
	defer t.close()
	c := t.cn.c
	rcpt := ReceiptFrom(t.ctx)
	t.commitAt = time.Now()
	if err := t.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Commit{Commit: &forwardpb.TxCommit{}}}); err != nil {
		// Not transmitted: the executor rolls back when the stream ends.
		return t.fail("commit", ErrTxAborted, withCtxErr(t.recvError(err), t.ctx))
	}
	c.rpcs.Add(1)
	rcpt.roundTrip()
	r, err := t.awaitReply(t.ctx)
	if err != nil {
		_, err := t.settle(t.ctx, "commit", err)
		return err
	}
	switch o := r.GetOutcome().(type) {
	case *forwardpb.TxResponse_CommitLsn:
		rcpt.commit(o.CommitLsn)
		return nil
	case *forwardpb.TxResponse_RolledBack:
		return pgx.ErrTxCommitRollback
	case *forwardpb.TxResponse_Error:
		return wire.PgErrorFromProto(o.Error)
	}
	return t.fail("commit", ErrInDoubt, fmt.Errorf("unexpected reply %T to COMMIT", r.GetOutcome()))
}

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
	if t.broken != nil || t.stream == nil {
		return nil
	}
	defer t.close()
	if err := t.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Rollback{Rollback: &forwardpb.TxRollback{}}}); err != nil {
		return nil // the stream is gone: so is the transaction
	}
	t.cn.c.rpcs.Add(1)
	ctx, cancel := t.cn.c.unitContext(context.WithoutCancel(t.ctx))
	defer cancel()
	// Wait for the acknowledgement so that the primary has released the
	// transaction's locks before the caller goes on.
	select {
	case <-t.resps:
	case <-ctx.Done():
	}
	return nil
}
