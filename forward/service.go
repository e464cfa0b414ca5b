package forward

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/auth"
	"github.com/flypg/flypg/forward/internal/wire"
)

// Trailer metadata by which the executor tells a client what became of a
// unit that ended with a gRPC error, so that the client never has to guess
// from a status code.
const (
	trailerOutcome   = "flypg-outcome"
	outcomeNotRun    = "not-committed" // nothing committed; safe to run again
	outcomeUnknown   = "unknown"       // may have committed
	outcomeCommitted = "committed"     // committed; see trailerLSN
	trailerLSN       = "flypg-commit-lsn"
)

func trailer(outcome string, lsn uint64) metadata.MD {
	md := metadata.Pairs(trailerOutcome, outcome)
	if lsn != 0 {
		md.Set(trailerLSN, strconv.FormatUint(lsn, 10))
	}
	return md
}

// trailerSink receives what a unit would set as gRPC trailers when it runs
// inside a Session, which has no trailers per statement.
type trailerSink struct{ md metadata.MD }

type trailerSinkKey struct{}

// setTrailer sets md as the call's trailer, or records it for the Session
// that runs the unit.
func setTrailer(ctx context.Context, md metadata.MD) {
	if sink, ok := ctx.Value(trailerSinkKey{}).(*trailerSink); ok {
		sink.md = metadata.Join(sink.md, md)
		return
	}
	grpc.SetTrailer(ctx, md)
}

type service struct {
	forwardpb.UnimplementedExecutorServer
	x *Executor
}

// authorize checks credentials and protocol version before anything runs.
func (x *Executor) authorize(ctx context.Context, method string) error {
	if x.verifier != nil {
		if err := x.verifier.Verify(ctx, method); err != nil {
			return err
		}
	}
	return auth.CheckProtocol(ctx, ProtocolVersion)
}

func unitID(u *forwardpb.Unit) (string, error) {
	if u == nil || len(u.GetRequestId()) != 16 {
		return "", status.Error(codes.InvalidArgument, "forward: unit needs a 16-byte request_id")
	}
	return string(u.GetRequestId()), nil
}

// admit decides whether a unit runs here. fresh means run it; otherwise
// prev holds the earlier attempt, already finished, to answer from.
func (x *Executor) admit(ctx context.Context, u *forwardpb.Unit) (e *ledgerEntry, fresh bool, err error) {
	id, err := unitID(u)
	if err != nil {
		return nil, false, err
	}
	now := time.Now()
	if u.GetAttempt() > 1 && u.GetInstance() != x.instance && x.durable == nil && x.ledger.lookup(id, now) == nil {
		// A retry of a unit this process has never seen, whose first
		// attempt went to another instance (or to this node before a
		// restart): running it could apply it twice.
		setTrailer(ctx, trailer(outcomeUnknown, 0))
		return nil, false, status.Errorf(codes.FailedPrecondition,
			"forward: in doubt: request %x is unknown to executor %s; its first attempt went to executor %q", u.GetRequestId(), x.instance, u.GetInstance())
	}
	for {
		e, fresh, err = x.ledger.begin(id, now)
		if errors.Is(err, errLedgerFull) {
			setTrailer(ctx, trailer(outcomeNotRun, 0))
			return nil, false, status.Errorf(codes.ResourceExhausted, "forward: executor busy: %v", err)
		}
		if fresh {
			return e, true, nil
		}
		if err := e.wait(ctx); err != nil {
			return nil, false, status.FromContextError(err).Err()
		}
		if e.state == notCommitted && e.answer == nil {
			// The attempt waited for had no effect (refused, or cancelled
			// before it committed): run this one.
			now = time.Now()
			continue
		}
		return e, false, nil
	}
}

// checkSize refuses a request over MaxRequestBytes before anything runs.
func (x *Executor) checkSize(ctx context.Context, m proto.Message) error {
	if n := proto.Size(m); n > x.cfg.MaxRequestBytes {
		setTrailer(ctx, trailer(outcomeNotRun, 0))
		return status.Errorf(codes.ResourceExhausted, "forward: request of %d bytes exceeds the executor's MaxRequestBytes (%d); nothing ran", n, x.cfg.MaxRequestBytes)
	}
	return nil
}

// admitOrReplay admits a unit: it returns the entry to run it under, or,
// for a retry whose first attempt already answered, a copy of that answer
// marked as replayed.
func (x *Executor) admitOrReplay(ctx context.Context, u *forwardpb.Unit) (*ledgerEntry, proto.Message, error) {
	e, fresh, err := x.admit(ctx, u)
	if err != nil || fresh {
		return e, nil, err
	}
	m, err := x.replay(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	m = proto.Clone(m)
	switch r := m.(type) {
	case *forwardpb.ExecResponse:
		r.Replayed = true
	case *forwardpb.CallResponse:
		r.Replayed = true
	}
	return nil, m, nil
}

// replay answers a retry from the ledger entry of its first attempt.
func (x *Executor) replay(ctx context.Context, e *ledgerEntry) (proto.Message, error) {
	switch {
	case e.answer != nil:
		return e.answer, nil
	case e.state == committed:
		setTrailer(ctx, trailer(outcomeCommitted, e.lsn))
		return nil, status.Errorf(codes.AlreadyExists, "forward: committed at LSN %d; the result was too large to keep for a retry", e.lsn)
	default:
		setTrailer(ctx, trailer(outcomeUnknown, 0))
		return nil, status.Error(codes.FailedPrecondition, "forward: in doubt: the first attempt lost its primary connection during COMMIT")
	}
}

// startUnit takes a concurrency slot and a primary connection for a fresh
// unit; on failure nothing ran.
func (x *Executor) startUnit(ctx context.Context, e *ledgerEntry) (release func(), conn *pgxpool.Conn, err error) {
	if x.pool == nil {
		x.ledger.forget(e, time.Now())
		setTrailer(ctx, trailer(outcomeNotRun, 0))
		return nil, nil, status.Error(codes.FailedPrecondition, "forward: this node does not forward SQL (no primary configured)")
	}
	if err := x.acquireSlot(ctx); err != nil {
		x.ledger.forget(e, time.Now())
		setTrailer(ctx, trailer(outcomeNotRun, 0))
		if errors.Is(err, errBusy) {
			return nil, nil, status.Errorf(codes.ResourceExhausted, "forward: executor busy: %d units running for %v", x.cfg.MaxConcurrent, x.cfg.QueueTimeout)
		}
		return nil, nil, status.FromContextError(err).Err()
	}
	c, err := x.pool.Acquire(ctx)
	if err != nil {
		x.releaseSlot()
		x.ledger.forget(e, time.Now())
		setTrailer(ctx, trailer(outcomeNotRun, 0))
		if ctx.Err() != nil {
			return nil, nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, nil, status.Errorf(codes.Unavailable, "forward: primary unreachable: %v", err)
	}
	if x.durable != nil {
		// On the unit's connection before it opens a transaction, so that
		// the table never depends on the unit committing.
		if err := x.durable.ensure(ctx, c.Conn()); err != nil {
			c.Release()
			x.releaseSlot()
			x.ledger.forget(e, time.Now())
			setTrailer(ctx, trailer(outcomeNotRun, 0))
			return nil, nil, status.Errorf(codes.Unavailable, "forward: %v", err)
		}
	}
	return func() { c.Release(); x.releaseSlot() }, c, nil
}

// statusOf turns a failed statement that did not commit into the gRPC
// error for the client.
func statusOf(serr *stmtError) error {
	switch serr.kind {
	case kindBadArg:
		return status.Errorf(codes.InvalidArgument, "forward: %v", serr.err)
	case kindTooLarge:
		return status.Errorf(codes.ResourceExhausted, "forward: %v", serr.err)
	default:
		return status.Errorf(codes.Unavailable, "forward: primary connection failed: %v", serr.err)
	}
}

func (s *service) Exec(ctx context.Context, req *forwardpb.ExecRequest) (*forwardpb.ExecResponse, error) {
	if err := s.x.authorize(ctx, forwardpb.Executor_Exec_FullMethodName); err != nil {
		return nil, err
	}
	return s.x.exec(ctx, req)
}

// exec runs one statement unit, for Exec and Session.
func (x *Executor) exec(ctx context.Context, req *forwardpb.ExecRequest) (*forwardpb.ExecResponse, error) {
	if req.GetStatement() == nil {
		return nil, status.Error(codes.InvalidArgument, "forward: exec without a statement")
	}
	if err := x.checkSize(ctx, req); err != nil {
		return nil, err
	}
	e, prev, err := x.admitOrReplay(ctx, req.GetUnit())
	if err != nil || prev != nil {
		resp, _ := prev.(*forwardpb.ExecResponse)
		return resp, err
	}
	release, c, err := x.startUnit(ctx, e)
	if err != nil {
		return nil, err
	}
	defer release()
	resp, state, lsn, err := x.runExec(ctx, c.Conn(), req.GetStatement(), req.GetUnit())
	keep := proto.Message(resp)
	if resp == nil || (state == notCommitted && ctx.Err() != nil) {
		keep = nil // cancelled mid-way: a retry should run it
	}
	x.ledger.finish(e, state, lsn, keep, time.Now())
	if err != nil {
		switch state {
		case unknown:
			setTrailer(ctx, trailer(outcomeUnknown, 0))
		case notCommitted:
			setTrailer(ctx, trailer(outcomeNotRun, 0))
		}
		return nil, err
	}
	return resp, nil
}

// runExec runs one statement in its own transaction; its request ID is
// recorded with it under durable deduplication.
func (x *Executor) runExec(ctx context.Context, c *pgx.Conn, st *forwardpb.Statement, u *forwardpb.Unit) (*forwardpb.ExecResponse, outcome, uint64, error) {
	res, lsn, serr := x.runAutocommit(ctx, c, st, u.GetRequestId())
	if serr == nil {
		return &forwardpb.ExecResponse{Result: res, CommitLsn: lsn, Instance: x.instance}, committed, lsn, nil
	}
	if x.durable != nil && u.GetAttempt() > 1 && (serr.kind == kindConn || serr.kind == kindLedgerFailed) {
		// This attempt ran nothing, but it did not learn whether an
		// earlier one committed (its ID's insert did not get through):
		// only the table can say.
		serr.kind = kindConnRecorded
	}
	if serr.kind == kindLedgerFailed {
		serr.kind = kindPg // the first attempt: the insert's error is the answer
	}
	switch serr.kind {
	case kindPg:
		return &forwardpb.ExecResponse{Error: wire.PgErrorToProto(serr.pg), Instance: x.instance}, notCommitted, 0, nil
	case kindTooLargeCommitted:
		setTrailer(ctx, trailer(outcomeCommitted, lsn))
		return nil, committed, lsn, status.Errorf(codes.ResourceExhausted, "forward: the statement committed, but %v", serr.err)
	case kindCommittedEarlier:
		setTrailer(ctx, trailer(outcomeCommitted, lsn))
		return nil, committed, lsn, status.Errorf(codes.AlreadyExists, "forward: an earlier attempt of this request committed (at most LSN %d); its result is not available here", lsn)
	case kindTombstoned:
		setTrailer(ctx, trailer(outcomeNotRun, 0))
		return nil, notCommitted, 0, status.Error(codes.Aborted, "forward: this request was declared not committed (Resolve); it will not run")
	case kindConnInDoubt:
		return nil, unknown, 0, status.Errorf(codes.Unavailable, "forward: in doubt: primary connection failed after the statement was sent: %v", serr.err)
	case kindConnRecorded:
		// No outcome trailer: the client asks again with the same ID, and
		// the ID's row decides whether it runs.
		return nil, recorded, 0, status.Errorf(codes.Unavailable, "forward: primary connection failed after the statement was sent; a retry with its request ID settles it: %v", serr.err)
	}
	return nil, notCommitted, 0, statusOf(serr)
}

func (s *service) Call(ctx context.Context, req *forwardpb.CallRequest) (*forwardpb.CallResponse, error) {
	x := s.x
	if err := x.authorize(ctx, forwardpb.Executor_Call_FullMethodName); err != nil {
		return nil, err
	}
	if err := x.checkSize(ctx, req); err != nil {
		return nil, err
	}
	e, prev, err := x.admitOrReplay(ctx, req.GetUnit())
	if err != nil || prev != nil {
		resp, _ := prev.(*forwardpb.CallResponse)
		return resp, err
	}
	if x.cfg.Calls == nil {
		resp := &forwardpb.CallResponse{Error: &forwardpb.CallError{UnknownFunction: true, Message: fmt.Sprintf("no function %q: this executor has no call handler", req.GetName())}, Instance: x.instance}
		x.ledger.finish(e, notCommitted, 0, resp, time.Now())
		return resp, nil
	}
	if err := x.acquireSlot(ctx); err != nil {
		x.ledger.forget(e, time.Now())
		setTrailer(ctx, trailer(outcomeNotRun, 0))
		if errors.Is(err, errBusy) {
			return nil, status.Errorf(codes.ResourceExhausted, "forward: executor busy")
		}
		return nil, status.FromContextError(err).Err()
	}
	defer x.releaseSlot()
	out, lsn, err := x.cfg.Calls.HandleCall(ctx, req.GetName(), req.GetPayload())
	if err != nil {
		resp := &forwardpb.CallResponse{Error: callError(err), Instance: x.instance}
		keep := proto.Message(resp)
		if ctx.Err() != nil {
			keep = nil
		}
		x.ledger.finish(e, notCommitted, 0, keep, time.Now())
		return resp, nil
	}
	resp := &forwardpb.CallResponse{Payload: out, CommitLsn: lsn, Instance: x.instance}
	x.ledger.finish(e, committed, lsn, resp, time.Now())
	return resp, nil
}

func callError(err error) *forwardpb.CallError {
	ce := &forwardpb.CallError{Message: err.Error(), UnknownFunction: errors.Is(err, ErrUnknownFunction)}
	var own *CallError
	if errors.As(err, &own) {
		ce.Code, ce.Message = own.Code, own.Message
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		ce.PgError = wire.PgErrorToProto(pg)
	}
	return ce
}

func (s *service) Resolve(ctx context.Context, req *forwardpb.ResolveRequest) (*forwardpb.ResolveResponse, error) {
	x := s.x
	if err := x.authorize(ctx, forwardpb.Executor_Resolve_FullMethodName); err != nil {
		return nil, err
	}
	id, err := unitID(req.GetUnit())
	if err != nil {
		return nil, err
	}
	resp := &forwardpb.ResolveResponse{Instance: x.instance}
	e := x.ledger.lookup(id, time.Now())
	if e == nil && x.durable != nil && x.pool != nil {
		return x.resolveDurable(ctx, []byte(id), resp)
	}
	if e != nil && x.durable != nil && x.pool != nil {
		if err := e.wait(ctx); err == nil && e.state == recorded {
			return x.resolveDurable(ctx, []byte(id), resp)
		}
	}
	if e == nil {
		if req.GetUnit().GetInstance() == x.instance {
			// Every unit this process received within the window is in the
			// ledger: the unit never arrived.
			resp.Outcome = forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED
		} else {
			resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
		}
		return resp, nil
	}
	// Give a running unit the request's time to finish.
	if err := e.wait(ctx); err != nil {
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_RUNNING
		return resp, nil
	}
	switch e.state {
	case committed:
		resp.Outcome, resp.CommitLsn = forwardpb.ResolveResponse_OUTCOME_COMMITTED, e.lsn
		if tr, ok := e.answer.(*forwardpb.TxResponse); ok {
			resp.Result = tr.GetCommitted().GetResult()
		}
	case notCommitted:
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED
	default:
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
	}
	return resp, nil
}

// resolveDurable answers Resolve for an ID this process does not hold,
// from the deduplication table.
func (x *Executor) resolveDurable(ctx context.Context, id []byte, resp *forwardpb.ResolveResponse) (*forwardpb.ResolveResponse, error) {
	c, err := x.pool.Acquire(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "forward: primary unreachable: %v", err)
	}
	defer c.Release()
	done, err := x.durable.resolve(ctx, c.Conn(), id)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "forward: resolve from the deduplication table: %v", err)
	}
	if !done {
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED
		return resp, nil
	}
	// The commit's own LSN is not kept; the current one is at or past it.
	var text string
	if err := c.QueryRow(ctx, lsnSQL).Scan(&text); err != nil {
		return nil, status.Errorf(codes.Unavailable, "forward: read LSN: %v", err)
	}
	resp.Outcome, resp.CommitLsn = forwardpb.ResolveResponse_OUTCOME_COMMITTED, x.normalize(ctx, c.Conn(), text)
	return resp, nil
}
