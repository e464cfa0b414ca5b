package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/forward/protocol"
)

// CallRecorder is implemented by a CallHandler whose functions'
// transactions record their request IDs with RecordCall (flypg's plugin
// does). Under DurableDedup the executor then settles a retried or resolved
// call from the deduplication table, as it does SQL units, across restarts
// and instances. Without it, calls keep the in-memory ledger's rules: a
// retry that reaches another instance is answered "in doubt".
type CallRecorder interface {
	CallHandler
	// RecordsCalls reports whether HandleCall runs RecordCall in the
	// function's transaction.
	RecordsCalls() bool
}

type callRecordKey struct{}

// callRecord is what a call under durable deduplication must record, and
// whether it did.
type callRecord struct {
	sql      string
	id       []byte
	inserted bool
}

// RecordCall records the request ID of the call ctx belongs to, when the
// executor runs it under durable deduplication (otherwise it does nothing):
// exec must run query, with its $1 argument, in the function's transaction.
// Call it in that transaction before the function. When an earlier attempt
// of the call committed (or a Resolve declared it not committed) it fails
// with the table's unique violation: return that error from HandleCall as
// it is, and the executor answers from the table.
func RecordCall(ctx context.Context, exec func(query string, args ...any) error) error {
	r, ok := ctx.Value(callRecordKey{}).(*callRecord)
	if !ok {
		return nil
	}
	if err := exec(r.sql, r.id); err != nil {
		return err
	}
	r.inserted = true
	return nil
}

// recordsCalls reports whether calls record their request IDs in the
// durable deduplication table.
func (x *Executor) recordsCalls() bool {
	r, ok := x.cfg.Calls.(CallRecorder)
	return ok && x.recordsSQL() && r.RecordsCalls()
}

func (s *service) Call(ctx context.Context, req *forwardpb.CallRequest) (*forwardpb.CallResponse, error) {
	x := s.x
	if err := x.authorize(ctx, forwardpb.Executor_Call_FullMethodName); err != nil {
		return nil, err
	}
	if err := x.checkSize(ctx, req); err != nil {
		return nil, err
	}
	records := x.recordsCalls()
	e, prev, err := x.admitOrReplay(ctx, req.GetUnit(), records, answerCall, &forwardpb.CallResponse{})
	if err != nil || prev != nil {
		resp, _ := prev.(*forwardpb.CallResponse)
		return resp, err
	}
	if x.cfg.Calls == nil {
		resp := &forwardpb.CallResponse{Error: &forwardpb.CallError{UnknownFunction: true, Message: fmt.Sprintf("no function %q: this executor has no call handler", req.GetName())}, Instance: x.instance}
		k, b := keep(answerCall, resp)
		x.ledger.finish(e, notCommitted, 0, k, b, time.Now())
		return resp, nil
	}
	if x.pool != nil {
		if err := x.checkIdentity(ctx, req.GetUnit(), x.pool); err != nil {
			x.ledger.forget(e, time.Now())
			return nil, err
		}
	}
	if err := x.acquireSlot(ctx, false); err != nil {
		x.ledger.forget(e, time.Now())
		return nil, x.slotError(ctx, err)
	}
	defer x.releaseSlot(false)
	hctx := ctx
	var rec *callRecord
	if records {
		if err := x.ensureDurable(ctx); err != nil {
			x.ledger.forget(e, time.Now())
			setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
			return nil, status.Errorf(codes.Unavailable, "forward: %v", err)
		}
		rec = &callRecord{sql: x.durable.insertSQL(), id: req.GetUnit().GetRequestId()}
		hctx = context.WithValue(ctx, callRecordKey{}, rec)
	}
	out, commitLSN, err := x.cfg.Calls.HandleCall(hctx, req.GetName(), req.GetPayload())
	switch {
	case err == nil:
		resp := &forwardpb.CallResponse{Payload: out, CommitLsn: uint64(commitLSN), Instance: x.instance}
		k, b := keep(answerCall, resp)
		x.ledger.finish(e, committed, commitLSN, k, b, time.Now())
		return resp, nil
	case records && x.durable.isConflict(err):
		return nil, x.callRecordedEarlier(ctx, e, req.GetUnit().GetRequestId())
	case errors.Is(err, protocol.ErrInDoubt) && records:
		// The request ID went with the COMMIT: a retry with it, or
		// Resolve, settles the outcome from the table.
		x.ledger.finish(e, recorded, 0, answerNone, nil, time.Now())
		return nil, status.Errorf(codes.Unavailable, "forward: call %s: its COMMIT's outcome is unknown; a retry with its request ID settles it: %v", req.GetName(), err)
	case errors.Is(err, protocol.ErrInDoubt):
		x.ledger.finish(e, unknown, 0, answerNone, nil, time.Now())
		setTrailer(ctx, trailer(protocol.OutcomeUnknown, 0))
		return nil, status.Errorf(codes.Unavailable, "forward: in doubt: call %s: %v", req.GetName(), err)
	case records && !rec.inserted && req.GetUnit().GetAttempt() > 1:
		// This attempt failed before its ID was recorded: it learned
		// nothing about an earlier attempt, which the table settles.
		x.ledger.finish(e, recorded, 0, answerNone, nil, time.Now())
		return nil, status.Errorf(codes.Unavailable, "forward: call %s failed before its request ID was recorded; a retry with it settles the outcome: %v", req.GetName(), err)
	}
	resp := &forwardpb.CallResponse{Error: callError(err), Instance: x.instance}
	k, b := keep(answerCall, resp)
	if ctx.Err() != nil {
		k, b = answerNone, nil // cancelled mid-way: a retry should run it
	}
	x.ledger.finish(e, notCommitted, 0, k, b, time.Now())
	return resp, nil
}

// ensureDurable creates the deduplication table once, on a connection of
// the pool.
func (x *Executor) ensureDurable(ctx context.Context) error {
	c, err := x.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("primary unreachable: %w", err)
	}
	defer c.Release()
	return x.durable.ensure(ctx, c.Conn())
}

// callRecordedEarlier answers a call whose request ID was already in the
// deduplication table: an earlier attempt committed it, or a Resolve
// declared it not committed.
func (x *Executor) callRecordedEarlier(ctx context.Context, e *ledgerEntry, id []byte) error {
	c, err := x.pool.Acquire(ctx)
	if err == nil {
		defer c.Release()
	}
	var done bool
	if err == nil {
		done, err = x.durable.committedFlag(ctx, c.Conn(), id)
	}
	var text string
	if err == nil && done {
		err = c.QueryRow(ctx, lsnSQL).Scan(&text)
	}
	switch {
	case err != nil:
		x.ledger.finish(e, recorded, 0, answerNone, nil, time.Now())
		return status.Errorf(codes.Unavailable, "forward: the call's request ID is recorded, but reading it failed: %v", err)
	case !done:
		x.ledger.finish(e, notCommitted, 0, answerNone, nil, time.Now())
		setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		return status.Error(codes.Aborted, "forward: this request was declared not committed (Resolve); it will not run")
	}
	commitLSN := x.normalize(ctx, c.Conn(), text)
	x.ledger.finish(e, committed, commitLSN, answerNone, nil, time.Now())
	setTrailer(ctx, trailer(protocol.OutcomeCommitted, commitLSN))
	return status.Errorf(codes.AlreadyExists, "forward: an earlier attempt of this call committed (at most LSN %s); its output is not available here", commitLSN)
}

func callError(err error) *forwardpb.CallError {
	ce := &forwardpb.CallError{Message: err.Error(), UnknownFunction: errors.Is(err, protocol.ErrUnknownFunction)}
	var own *protocol.CallError
	if errors.As(err, &own) {
		ce.Code, ce.Message = own.Code, own.Message
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		ce.PgError = wire.PgErrorToProto(pg)
	}
	return ce
}
