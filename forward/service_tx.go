package forward

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
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
	if r := refusal(first); r != "" {
		stream.SetTrailer(trailer(outcomeNotRun, 0))
		return status.Errorf(codes.ResourceExhausted, "forward: request refused: %s; nothing ran", r)
	}
	if n := proto.Size(first); n > x.cfg.MaxRequestBytes {
		stream.SetTrailer(trailer(outcomeNotRun, 0))
		return status.Errorf(codes.ResourceExhausted, "forward: message of %d bytes exceeds the executor's MaxRequestBytes (%d); nothing ran", n, x.cfg.MaxRequestBytes)
	}
	b := first.GetBegin()
	if b == nil || b.GetFirst() == nil {
		return status.Error(codes.InvalidArgument, "forward: a transaction stream must start with TxBegin carrying the first statement")
	}
	begin, err := beginSQL(b.GetIsolation(), b.GetReadOnly(), b.GetDeferrable())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "forward: %v", err)
	}
	e, fresh, err := x.admit(ctx, b.GetUnit(), x.recordsSQL())
	if err != nil {
		return err
	}
	if !fresh {
		// Transactions are never retried as a whole stream; an existing ID
		// is a client bug or a replay.
		stream.SetTrailer(trailer(outcomeNotRun, 0))
		return status.Error(codes.FailedPrecondition, "forward: duplicate transaction request ID")
	}
	uc, err := x.startUnit(ctx, e, b.GetUnit(), true)
	if err != nil {
		return err
	}
	defer uc.release()
	x.openTx.Add(1)
	defer x.openTx.Add(-1)
	t := &txRun{x: x, stream: stream, entry: e, conn: uc.conn(), readOnly: b.GetReadOnly()}
	return t.run(ctx, begin, b.GetFirst(), b.GetCommit())
}

type txRun struct {
	x        *Executor
	stream   forwardpb.Executor_TxServer
	entry    *ledgerEntry
	conn     *pgx.Conn
	readOnly bool // began READ ONLY: nothing to record at COMMIT
	ended    bool
}

// end records a transaction that did not commit, rolling it back first.
func (t *txRun) end(ctx context.Context, err error) error {
	if !t.ended {
		t.ended = true
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		t.x.rollback(rctx, t.conn) // a failed ROLLBACK leaves a dirty connection, which the pool destroys
		cancel()
		t.x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
	}
	if err != nil {
		t.stream.SetTrailer(trailer(outcomeNotRun, 0))
	}
	return err
}

func (t *txRun) send(resp *forwardpb.TxResponse) error {
	resp.Instance = t.x.instance
	return t.stream.Send(resp)
}

func (t *txRun) run(ctx context.Context, begin string, first *forwardpb.Statement, commitNow bool) error {
	x := t.x
	ctx, cancel := context.WithTimeout(ctx, x.cfg.TxMaxDuration)
	defer cancel()

	res, serr := x.beginWith(ctx, t.conn, begin, first)
	if commitNow {
		return t.commitWith(ctx, res, serr)
	}
	if err := t.answer(ctx, res, serr); err != nil {
		return t.end(ctx, err)
	}

	// Messages arrive on their own goroutine so that the idle limit can
	// interrupt the wait; it ends when the handler returns and gRPC ends
	// the stream.
	msgs := make(chan *forwardpb.TxRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := t.stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	idle := time.NewTimer(x.cfg.TxIdleTimeout)
	defer idle.Stop()
	for {
		var m *forwardpb.TxRequest
		select {
		case m = <-msgs:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Aborted, "forward: transaction stream closed without COMMIT; rolled back")
			}
			return t.end(ctx, err)
		case <-idle.C:
			return t.end(ctx, status.Errorf(codes.DeadlineExceeded, "forward: transaction idle for %v; rolled back", x.cfg.TxIdleTimeout))
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded && t.stream.Context().Err() == nil {
				return t.end(ctx, status.Errorf(codes.DeadlineExceeded, "forward: transaction exceeded %v; rolled back", x.cfg.TxMaxDuration))
			}
			return t.end(ctx, status.FromContextError(ctx.Err()).Err())
		}
		idle.Reset(x.cfg.TxIdleTimeout)
		if r := refusal(m); r != "" {
			return t.end(ctx, status.Errorf(codes.ResourceExhausted, "forward: request refused: %s; the transaction rolled back", r))
		}
		if n := proto.Size(m); n > x.cfg.MaxRequestBytes {
			return t.end(ctx, status.Errorf(codes.ResourceExhausted, "forward: message of %d bytes exceeds the executor's MaxRequestBytes (%d); the transaction rolled back", n, x.cfg.MaxRequestBytes))
		}
		switch op := m.GetOp().(type) {
		case *forwardpb.TxRequest_Statement:
			res, serr := x.statement(ctx, t.conn, op.Statement)
			if err := t.answer(ctx, res, serr); err != nil {
				return t.end(ctx, err)
			}
		case *forwardpb.TxRequest_Commit:
			return t.commit(ctx, nil)
		case *forwardpb.TxRequest_Last:
			res, serr := x.statement(ctx, t.conn, op.Last)
			return t.commitWith(ctx, res, serr)
		case *forwardpb.TxRequest_Rollback:
			t.end(ctx, nil)
			return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_RolledBack{RolledBack: &forwardpb.TxRollback{}}})
		default:
			return t.end(ctx, status.Errorf(codes.InvalidArgument, "forward: unexpected %T inside a transaction", op))
		}
	}
}

// answer sends a statement's result, or its PostgreSQL error (the
// transaction goes on, aborted, as on a direct connection: the client may
// roll back to a savepoint). Other failures end the transaction.
func (t *txRun) answer(ctx context.Context, res *forwardpb.Result, serr *stmtError) error {
	if serr == nil {
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Result{Result: res}})
	}
	if serr.kind == kindPg && ctx.Err() == nil {
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Error{Error: wire.PgErrorToProto(serr.pg)}})
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
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
			return t.end(ctx, status.FromContextError(ctx.Err()).Err())
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
		x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Error{Error: wire.PgErrorToProto(serr.pg)}})
	case serr != nil && pgconn.SafeToRetry(serr.err):
		// COMMIT never left (the connection was already closed): the
		// transaction is gone with its connection.
		x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
		t.stream.SetTrailer(trailer(outcomeNotRun, 0))
		return status.Errorf(codes.Unavailable, "forward: primary connection lost before COMMIT; the transaction rolled back: %v", serr.err)
	case serr != nil && x.durable != nil:
		// The request ID went with COMMIT: no outcome trailer, so the
		// client asks Resolve, which reads the ID's row.
		x.ledger.finish(t.entry, recorded, 0, answerNone, nil, time.Now())
		return status.Errorf(codes.Unavailable, "forward: primary connection failed during COMMIT; its request ID settles the outcome: %v", serr.err)
	case serr != nil:
		x.ledger.finish(t.entry, unknown, 0, answerNone, nil, time.Now())
		t.stream.SetTrailer(trailer(outcomeUnknown, 0))
		return status.Errorf(codes.Unavailable, "forward: in doubt: primary connection failed during COMMIT: %v", serr.err)
	case cr.rolledBack:
		x.ledger.finish(t.entry, notCommitted, 0, answerNone, nil, time.Now())
		return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_RolledBack{RolledBack: &forwardpb.TxRollback{}}})
	}
	if res != nil {
		answer := &forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_Committed{Committed: &forwardpb.TxCommitted{Result: res, CommitLsn: cr.lsn}}}
		// Kept, so that a client whose reply is lost gets the result from
		// Resolve instead of only learning that it committed.
		k, b := keep(answerTx, answer)
		x.ledger.finish(t.entry, committed, cr.lsn, k, b, time.Now())
		return t.send(answer)
	}
	x.ledger.finish(t.entry, committed, cr.lsn, answerNone, nil, time.Now())
	return t.send(&forwardpb.TxResponse{Outcome: &forwardpb.TxResponse_CommitLsn{CommitLsn: cr.lsn}})
}
