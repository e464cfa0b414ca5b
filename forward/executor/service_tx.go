package executor

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/forward/protocol"
)

// Tx runs one interactive transaction on one primary connection, for as
// long as its stream lasts. Anything but a TxCommit that succeeds ends in
// ROLLBACK: a broken or cancelled stream, an idle or total time limit, a
// failed connection.
func (s *service) Tx(stream forwardpb.Executor_TxServer) error {
	x := s.x
	ctx := stream.Context()
	if err := x.authorize(ctx, forwardpb.Executor_Tx_FullMethodName); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	b, begin, e, err := x.admitBegin(ctx, stream, first)
	if err != nil {
		return err
	}
	uc, err := x.startUnit(ctx, e, b.GetUnit(), true)
	if err != nil {
		return err
	}
	defer uc.release()
	x.openTx.Add(1)
	defer x.openTx.Add(-1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := &txRun{x: x, out: stream, in: txInbox(ctx, stream), entry: e, conn: uc.conn(), readOnly: b.GetReadOnly()}
	return t.run(ctx, begin, b.GetFirst(), b.GetCommit())
}

// unitBegin checks the message that starts a unit on a Tx or Pin stream:
// a TxBegin carrying the first statement, within the request limits. It
// returns the TxBegin and its BEGIN statement, or the error that ends the
// stream (its trailer set: nothing ran).
func (x *Executor) unitBegin(out txOut, m *forwardpb.TxRequest) (*forwardpb.TxBegin, string, error) {
	if r := refusal(m); r != "" {
		out.SetTrailer(trailer(protocol.OutcomeNotRun, 0))
		return nil, "", status.Errorf(codes.ResourceExhausted, "forward: request refused: %s; nothing ran", r)
	}
	if n := proto.Size(m); n > x.cfg.MaxRequestBytes {
		out.SetTrailer(limited(trailer(protocol.OutcomeNotRun, 0), "MaxRequestBytes"))
		return nil, "", status.Errorf(codes.ResourceExhausted, "forward: message of %d bytes exceeds the executor's MaxRequestBytes (%d); nothing ran", n, x.cfg.MaxRequestBytes)
	}
	b := m.GetBegin()
	if b == nil || b.GetFirst() == nil {
		return nil, "", status.Error(codes.InvalidArgument, "forward: a unit must start with TxBegin carrying the first statement")
	}
	begin, err := beginSQL(b.GetIsolation(), b.GetReadOnly(), b.GetDeferrable())
	if err != nil {
		return nil, "", status.Errorf(codes.InvalidArgument, "forward: %v", err)
	}
	return b, begin, nil
}

// admitBegin checks the message that starts a unit on a Tx or Pin stream
// (unitBegin) and takes the unit's ledger entry. Such units are never
// retried (a transaction's stream, or a pin's session state, is gone with
// its stream): an ID the ledger holds is a client bug or a replay, and
// ends the stream with nothing run.
func (x *Executor) admitBegin(ctx context.Context, out txOut, m *forwardpb.TxRequest) (*forwardpb.TxBegin, string, *ledgerEntry, error) {
	b, begin, err := x.unitBegin(out, m)
	if err != nil {
		return nil, "", nil, err
	}
	e, fresh, err := x.admit(ctx, b.GetUnit(), x.recordsSQL())
	if err != nil {
		return nil, "", nil, err
	}
	if !fresh {
		out.SetTrailer(trailer(protocol.OutcomeNotRun, 0))
		return nil, "", nil, status.Error(codes.FailedPrecondition, "forward: duplicate request ID of a transaction or pinned unit")
	}
	return b, begin, e, nil
}

// txOut is where a transaction's answers go: its Tx stream, or the pin
// stream it runs in.
type txOut interface {
	Send(*forwardpb.TxResponse) error
	SetTrailer(metadata.MD)
}

type txRun struct {
	x        *Executor
	out      txOut
	in       *inbox
	entry    *ledgerEntry
	conn     *pgx.Conn
	readOnly bool            // began READ ONLY: nothing to record at COMMIT
	ended    bool            // rolled back or committed
	flow     *partFlow       // the current statement's parts, if it sends any
	limit    string          // the executor limit a statement hit, if any
	outer    context.Context // the stream's context, without TxMaxDuration
}

// ctxError is the error of a transaction whose context ended: its
// caller's end, or TxMaxDuration.
func (t *txRun) ctxError(ctx context.Context) error {
	if ctx.Err() == context.DeadlineExceeded && t.outer.Err() == nil {
		t.limit = "TxMaxDuration"
		return status.Errorf(codes.DeadlineExceeded, "forward: transaction exceeded %v (the executor's TxMaxDuration); rolled back", t.x.cfg.TxMaxDuration)
	}
	return status.FromContextError(ctx.Err()).Err()
}

// end records a transaction that did not commit, rolling it back first.
// limit names the executor limit that ended it, if one did.
func (t *txRun) end(ctx context.Context, err error, limit ...string) error {
	if !t.ended {
		t.ended = true
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		t.x.rollback(rctx, t.conn) // a failed ROLLBACK leaves a dirty connection, which the pool destroys
		cancel()
		t.x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
	}
	if err != nil {
		md := trailer(protocol.OutcomeNotRun, 0)
		if len(limit) > 0 {
			t.limit = limit[0]
		}
		if t.limit != "" {
			md.Set(protocol.TrailerLimit, t.limit)
		}
		t.out.SetTrailer(md)
	}
	return err
}

func (t *txRun) send(resp *forwardpb.TxResponse) error {
	resp.Instance = t.x.instance
	return t.out.Send(resp)
}

// parts returns the sink of st's result: parts go out as answers of their
// own, for a client that takes them.
func (t *txRun) parts(st *forwardpb.Statement) partSink {
	t.flow = t.in.flow(func(part *forwardpb.Result) error {
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Result{Result: part}})
	})
	return t.flow.sink()
}

// run runs the transaction from its first statement until it commits,
// rolls back or fails; the error ends the transaction's stream.
func (t *txRun) run(ctx context.Context, begin string, first *forwardpb.Statement, commitNow bool) error {
	x := t.x
	t.outer = ctx
	ctx, cancel := context.WithTimeout(ctx, x.cfg.TxMaxDuration)
	defer cancel()

	res, serr := x.beginWith(ctx, t.conn, begin, first, t.parts(first))
	if commitNow {
		return t.commitWith(ctx, res, serr)
	}
	if err := t.answer(ctx, res, serr); err != nil {
		return t.end(ctx, err)
	}
	for {
		m, err := t.in.next(ctx, x.cfg.TxIdleTimeout)
		switch {
		case errors.Is(err, io.EOF):
			return t.end(ctx, status.Error(codes.Aborted, "forward: transaction stream closed without COMMIT; rolled back"))
		case errors.Is(err, errIdle):
			return t.end(ctx, status.Errorf(codes.DeadlineExceeded, "forward: transaction idle for %v (the executor's TxIdleTimeout); rolled back", x.cfg.TxIdleTimeout), "TxIdleTimeout")
		case err != nil && ctx.Err() != nil:
			return t.end(ctx, t.ctxError(ctx))
		case err != nil:
			return t.end(ctx, err)
		}
		if done, err := t.step(ctx, m); done || err != nil {
			return err
		}
	}
}

// step handles one message of the open transaction; done says it ended.
func (t *txRun) step(ctx context.Context, m *forwardpb.TxRequest) (done bool, err error) {
	x := t.x
	if r := refusal(m); r != "" {
		return true, t.end(ctx, status.Errorf(codes.ResourceExhausted, "forward: request refused: %s; the transaction rolled back", r))
	}
	if n := proto.Size(m); n > x.cfg.MaxRequestBytes {
		return true, t.end(ctx, status.Errorf(codes.ResourceExhausted, "forward: message of %d bytes exceeds the executor's MaxRequestBytes (%d); the transaction rolled back", n, x.cfg.MaxRequestBytes), "MaxRequestBytes")
	}
	switch op := m.GetOp().(type) {
	case *forwardpb.TxRequest_Statement:
		res, serr := x.runStatement(ctx, t.conn, op.Statement, t.parts(op.Statement))
		if err := t.answer(ctx, res, serr); err != nil {
			return true, t.end(ctx, err)
		}
		return false, nil
	case *forwardpb.TxRequest_Commit:
		t.flow = nil
		return true, t.commit(ctx, nil)
	case *forwardpb.TxRequest_Last:
		res, serr := x.runStatement(ctx, t.conn, op.Last, t.parts(op.Last))
		return true, t.commitWith(ctx, res, serr)
	case *forwardpb.TxRequest_Rollback:
		t.end(ctx, nil)
		return true, t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_RolledBack{RolledBack: &forwardpb.TxRollback{}}})
	}
	return true, t.end(ctx, status.Errorf(codes.InvalidArgument, "forward: unexpected %T inside a transaction", m.GetOp()))
}

// answer sends a statement's result, or its PostgreSQL error (the
// transaction goes on, aborted, as on a direct connection: the client may
// roll back to a savepoint). Other failures end the transaction.
func (t *txRun) answer(ctx context.Context, res *forwardpb.Result, serr *stmtError) error {
	if serr == nil {
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Result{Result: t.flow.last(res)}})
	}
	if serr.kind == kindPg && ctx.Err() == nil {
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Error{Error: wire.PgErrorToProto(serr.pg)}})
	}
	if ctx.Err() != nil {
		return t.ctxError(ctx)
	}
	if serr.kind == kindTooLarge {
		t.limit = "MaxResponseBytes"
	}
	return statusOf(serr)
}

// commitWith commits after a transaction's last statement and answers
// with its result and the commit LSN. If the statement failed, the
// transaction is rolled back and the answer is the failure.
func (t *txRun) commitWith(ctx context.Context, res *forwardpb.Result, serr *stmtError) error {
	if serr != nil {
		if serr.kind == kindPg && ctx.Err() == nil {
			t.end(ctx, nil)
			return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Error{Error: wire.PgErrorToProto(serr.pg)}})
		}
		if ctx.Err() != nil {
			return t.end(ctx, t.ctxError(ctx))
		}
		if serr.kind == kindTooLarge {
			t.limit = "MaxResponseBytes"
		}
		return t.end(ctx, statusOf(serr))
	}
	return t.commit(ctx, res)
}

// commit commits the transaction and answers with the commit LSN, and with
// res when the commit follows a last statement.
func (t *txRun) commit(ctx context.Context, res *forwardpb.Result) error {
	x := t.x
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	id := []byte(t.entry.id)
	if t.readOnly {
		id = nil // a read-only transaction wrote nothing to deduplicate
	}
	cr, serr := x.commit(cctx, t.conn, id)
	t.ended = true
	switch {
	case serr != nil && serr.kind == kindPg:
		// COMMIT failed (a deferred constraint): the last statement's
		// result goes with the error, as pgx hands over a statement's
		// result before its COMMIT fails.
		x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Error{Error: wire.PgErrorToProto(serr.pg)}, LastResult: t.flow.last(res)})
	case serr != nil && pgconn.SafeToRetry(serr.err):
		// COMMIT never left (the connection was already closed): the
		// transaction is gone with its connection.
		x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
		t.out.SetTrailer(trailer(protocol.OutcomeNotRun, 0))
		return status.Errorf(codes.Unavailable, "forward: primary connection lost before COMMIT; the transaction rolled back: %v", serr.err)
	case serr != nil && x.durable != nil:
		// The request ID went with COMMIT: no outcome trailer, so the
		// client asks Resolve, which reads the ID's row.
		x.ledger.finish(t.entry, recorded, 0, answerNone, nil, time.Now())
		return status.Errorf(codes.Unavailable, "forward: primary connection failed during COMMIT; its request ID settles the outcome: %v", serr.err)
	case serr != nil:
		x.ledger.finish(t.entry, unknown, 0, answerNone, nil, time.Now())
		t.out.SetTrailer(trailer(protocol.OutcomeUnknown, 0))
		return status.Errorf(codes.Unavailable, "forward: in doubt: primary connection failed during COMMIT: %v", serr.err)
	case cr.rolledBack:
		x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_RolledBack{RolledBack: &forwardpb.TxRollback{}}})
	}
	if res != nil {
		answer := &forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Committed{Committed: &forwardpb.TxCommitted{Result: t.flow.last(res), CommitLsn: uint64(cr.lsn)}}}
		// Kept, so that a client whose reply is lost gets the result from
		// Resolve instead of only learning that it committed (not when
		// parts of it went before: the last alone is not the result).
		k, b := answerNone, []byte(nil)
		if t.flow.whole() {
			k, b = keep(answerTx, answer)
		}
		x.ledger.finish(t.entry, committed, cr.lsn, k, b, time.Now())
		return t.send(answer)
	}
	x.ledger.finish(t.entry, committed, cr.lsn, answerNone, nil, time.Now())
	return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_CommitLsn{CommitLsn: uint64(cr.lsn)}})
}
