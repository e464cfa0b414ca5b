package executor

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// limited adds the name of the limit that refused or ended a unit to md.
func limited(md metadata.MD, limit string) metadata.MD {
	md.Set(protocol.TrailerLimit, limit)
	return md
}

// trailer is the trailer of a unit that ended with outcome, committed at
// commitLSN if it committed.
func trailer(outcome string, commitLSN lsn.LSN) metadata.MD {
	return protocol.Trailer{Outcome: outcome, LSN: commitLSN}.MD()
}

// refused is the trailer of a unit refused before it ran, for reason.
func refused(reason string) metadata.MD {
	return metadata.Pairs(protocol.TrailerOutcome, protocol.OutcomeNotRun, protocol.TrailerRefusal, reason)
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

// serviceDesc is the generated description of the Executor service, with
// the reading of each call's request wrapped to say whether it was read
// (protocol.TrailerRequest): gRPC refuses a request over the server's
// receive limit while reading it, before the method runs, and writes the
// call's status itself at once, so the trailer that says nothing ran must
// be set before reading, and contradicted once the request is read.
func serviceDesc() *grpc.ServiceDesc {
	d := forwardpb.Executor_ServiceDesc
	d.Methods = slices.Clone(d.Methods)
	for i := range d.Methods {
		handle := d.Methods[i].Handler
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			return handle(srv, ctx, func(m any) error {
				grpc.SetTrailer(ctx, metadata.Pairs(protocol.TrailerRequest, protocol.RequestUnread))
				err := dec(m)
				if err == nil {
					grpc.SetTrailer(ctx, metadata.Pairs(protocol.TrailerRequest, protocol.RequestRead))
				}
				return err
			}, in)
		}
	}
	return &d
}

func unitID(u *forwardpb.Unit) (string, error) {
	if u == nil || len(u.GetRequestId()) != 16 {
		return "", status.Error(codes.InvalidArgument, "forward: unit needs a 16-byte request_id")
	}
	return string(u.GetRequestId()), nil
}

// recordsSQL reports whether SQL units record their request IDs in the
// durable deduplication table.
func (x *Executor) recordsSQL() bool { return x.durable != nil && x.pool != nil }

// admit decides whether a unit runs here. fresh means run it; otherwise
// e holds the earlier attempt, already finished, to answer from. records
// says the unit's request ID goes into the durable table with it, which
// then settles a retry this process has never seen.
func (x *Executor) admit(ctx context.Context, u *forwardpb.Unit, records bool) (e *ledgerEntry, fresh bool, err error) {
	id, err := unitID(u)
	if err != nil {
		return nil, false, err
	}
	now := time.Now()
	if u.GetAttempt() > 1 && u.GetInstance() != x.instance && !records && x.ledger.lookup(id, now) == nil {
		// A retry of a unit this process has never seen, whose first
		// attempt went to another instance (or to this node before a
		// restart): running it could apply it twice.
		setTrailer(ctx, trailer(protocol.OutcomeUnknown, 0))
		return nil, false, status.Errorf(codes.FailedPrecondition,
			"forward: in doubt: request %x is unknown to executor %s; its first attempt went to executor %q", u.GetRequestId(), x.instance, u.GetInstance())
	}
	for {
		e, fresh, err = x.ledger.begin(id, now)
		if errors.Is(err, errLedgerFull) {
			setTrailer(ctx, refused(protocol.RefusalBusy))
			return nil, false, status.Errorf(codes.ResourceExhausted, "forward: executor busy: %v (DedupMaxBytes %d)", err, x.cfg.DedupMaxBytes)
		}
		if fresh {
			return e, true, nil
		}
		if err := x.ledger.wait(ctx, e); err != nil {
			return nil, false, status.FromContextError(err).Err()
		}
		if v := x.ledger.view(e); v.state == notCommitted && v.answer == nil && !v.tomb {
			// The attempt waited for had no effect (refused, or cancelled
			// before it committed): run this one.
			now = time.Now()
			continue
		}
		return e, false, nil
	}
}

// checkSize refuses a request over MaxRequestBytes, or one the codec
// refused, before anything runs.
func (x *Executor) checkSize(ctx context.Context, m proto.Message) error {
	if r := refusal(m); r != "" {
		setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		return status.Errorf(codes.ResourceExhausted, "forward: request refused: %s; nothing ran", r)
	}
	if n := proto.Size(m); n > x.cfg.MaxRequestBytes {
		setTrailer(ctx, limited(trailer(protocol.OutcomeNotRun, 0), "MaxRequestBytes"))
		return status.Errorf(codes.ResourceExhausted, "forward: request of %d bytes exceeds the executor's MaxRequestBytes (%d); nothing ran", n, x.cfg.MaxRequestBytes)
	}
	return nil
}

// admitOrReplay admits a unit: it returns the entry to run it under, or,
// for a retry whose first attempt already answered, that answer (decoded
// into into, a reply of kind) marked as replayed.
func (x *Executor) admitOrReplay(ctx context.Context, u *forwardpb.Unit, records bool, kind answerKind, into proto.Message) (*ledgerEntry, proto.Message, error) {
	e, fresh, err := x.admit(ctx, u, records)
	if err != nil || fresh {
		return e, nil, err
	}
	m, err := x.replay(ctx, x.ledger.view(e), kind, into)
	if err != nil {
		return nil, nil, err
	}
	switch r := m.(type) {
	case *forwardpb.ExecResponse:
		r.Replayed = true
	case *forwardpb.CallResponse:
		r.Replayed = true
	}
	return nil, m, nil
}

// replay answers a retry from the ledger entry of its first attempt.
func (x *Executor) replay(ctx context.Context, v view, kind answerKind, into proto.Message) (proto.Message, error) {
	switch {
	case v.tomb:
		setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		return nil, status.Error(codes.Aborted, "forward: this request was declared not committed (Resolve); it will not run")
	case v.answer != nil && v.kind == kind && proto.Unmarshal(v.answer, into) == nil:
		return into, nil
	case v.state == committed:
		setTrailer(ctx, trailer(protocol.OutcomeCommitted, v.lsn))
		return nil, status.Errorf(codes.AlreadyExists, "forward: committed at LSN %s; the result was too large to keep for a retry", v.lsn)
	default:
		setTrailer(ctx, trailer(protocol.OutcomeUnknown, 0))
		return nil, status.Error(codes.FailedPrecondition, "forward: in doubt: the first attempt lost its primary connection during COMMIT")
	}
}

// unitConn is a fresh unit's concurrency slot and primary connection.
type unitConn struct {
	x  *Executor
	pc *pgxpool.Conn
	tx bool
}

func (u *unitConn) conn() *pgx.Conn { return u.pc.Conn() }

// release returns the connection to the pool (or closes it, when the unit
// may have left session state on it) and the slot.
func (u *unitConn) release() {
	discardIfTainted(u.pc.Conn())
	u.pc.Release()
	u.x.releaseSlot(u.tx)
}

// startUnit takes a concurrency slot and a primary connection for a fresh
// unit (a transaction if tx) and checks that the client's replica
// replicates the database this executor serves; on failure nothing ran.
func (x *Executor) startUnit(ctx context.Context, e *ledgerEntry, u *forwardpb.Unit, tx bool) (*unitConn, error) {
	refuse := func(err error) (*unitConn, error) {
		x.ledger.forget(e, time.Now())
		return nil, err
	}
	if x.pool == nil {
		setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		return refuse(status.Error(codes.FailedPrecondition, "forward: this node does not forward SQL (no primary configured)"))
	}
	if err := x.checkIdentity(ctx, u, nil); err != nil {
		return refuse(err)
	}
	if err := x.acquireSlot(ctx, tx); err != nil {
		return refuse(x.slotError(ctx, err))
	}
	c, err := x.pool.Acquire(ctx)
	if err != nil {
		x.releaseSlot(tx)
		setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		if ctx.Err() != nil {
			return refuse(status.FromContextError(ctx.Err()).Err())
		}
		return refuse(status.Errorf(codes.Unavailable, "forward: primary unreachable: %v", err))
	}
	uc := &unitConn{x: x, pc: c, tx: tx}
	if err := x.checkIdentity(ctx, u, c.Conn()); err != nil {
		uc.release()
		return refuse(err)
	}
	x.boundRows(c.Conn())
	if x.durable != nil {
		// On the unit's connection before it opens a transaction, so that
		// the table never depends on the unit committing.
		if err := x.durable.ensure(ctx, c.Conn()); err != nil {
			uc.release()
			setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
			return refuse(status.Errorf(codes.Unavailable, "forward: %v", err))
		}
	}
	return uc, nil
}

// slotError is the answer to a unit that found no slot: busy, or its
// caller gone. Nothing ran.
func (x *Executor) slotError(ctx context.Context, err error) error {
	if errors.Is(err, errBusy) {
		setTrailer(ctx, refused(protocol.RefusalBusy))
		return status.Errorf(codes.ResourceExhausted, "forward: executor busy: all %d unit slots stayed taken until shortly before the deadline; nothing ran", x.cfg.MaxConcurrent)
	}
	setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
	return status.FromContextError(err).Err()
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
	a := s.x.execAnswer(ctx, req)
	if a.md != nil {
		grpc.SetTrailer(ctx, a.md)
	}
	return a.resp, a.err
}

// serveExec runs one statement unit, for Exec and Session: its result whole,
// or, with emit set, in parts to emit but the last.
func (x *Executor) serveExec(ctx context.Context, req *forwardpb.ExecRequest, emit partSink) (*forwardpb.ExecResponse, error) {
	if req.GetStatement() == nil {
		return nil, status.Error(codes.InvalidArgument, "forward: exec without a statement")
	}
	if err := x.checkSize(ctx, req); err != nil {
		return nil, err
	}
	e, prev, err := x.admitOrReplay(ctx, req.GetUnit(), x.recordsSQL(), answerExec, &forwardpb.ExecResponse{})
	if err != nil || prev != nil {
		resp, _ := prev.(*forwardpb.ExecResponse)
		return resp, err
	}
	uc, err := x.startUnit(ctx, e, req.GetUnit(), false)
	if err != nil {
		return nil, err
	}
	defer uc.release()
	return x.execOn(ctx, uc.conn(), e, req, emit)
}

// execOn runs the lone statement of the fresh unit e on c and records its
// outcome.
func (x *Executor) execOn(ctx context.Context, c *pgx.Conn, e *ledgerEntry, req *forwardpb.ExecRequest, emit partSink) (*forwardpb.ExecResponse, error) {
	parted := false
	if emit != nil {
		inner := emit
		emit = func(part *forwardpb.Result) { parted = true; inner(part) }
	}
	resp, state, commitLSN, err := x.runExec(ctx, c, req.GetStatement(), req.GetUnit(), emit)
	kind, answer := answerNone, []byte(nil)
	if resp != nil && !parted && !(state == notCommitted && ctx.Err() != nil) {
		// Kept unless cancelled mid-way (then a retry should run it) or
		// sent in parts (the last alone is not the answer).
		kind, answer = keep(answerExec, resp)
	}
	x.ledger.finish(e, state, commitLSN, kind, answer, time.Now())
	if err != nil {
		switch state {
		case unknown:
			setTrailer(ctx, trailer(protocol.OutcomeUnknown, 0))
		case notCommitted:
			setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		}
		return nil, err
	}
	return resp, nil
}

// runExec runs one statement in its own transaction; its request ID is
// recorded with it under durable deduplication.
func (x *Executor) runExec(ctx context.Context, c *pgx.Conn, st *forwardpb.Statement, u *forwardpb.Unit, emit partSink) (*forwardpb.ExecResponse, outcome, lsn.LSN, error) {
	res, commitLSN, serr := x.runAutocommit(ctx, c, st, u.GetRequestId(), emit)
	if serr == nil {
		return &forwardpb.ExecResponse{Result: res, CommitLsn: uint64(commitLSN), Instance: x.instance}, committed, commitLSN, nil
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
		// With the statement's result when its COMMIT failed.
		return &forwardpb.ExecResponse{Error: wire.PgErrorToProto(serr.pg), Result: serr.res, Instance: x.instance}, notCommitted, 0, nil
	case kindTooLargeCommitted:
		setTrailer(ctx, limited(trailer(protocol.OutcomeCommitted, commitLSN), "MaxResponseBytes"))
		return nil, committed, commitLSN, status.Errorf(codes.ResourceExhausted, "forward: the statement committed, but %v", serr.err)
	case kindCommittedEarlier:
		setTrailer(ctx, trailer(protocol.OutcomeCommitted, commitLSN))
		return nil, committed, commitLSN, status.Errorf(codes.AlreadyExists, "forward: an earlier attempt of this request committed (at most LSN %s); its result is not available here", commitLSN)
	case kindTombstoned:
		setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
		return nil, notCommitted, 0, status.Error(codes.Aborted, "forward: this request was declared not committed (Resolve); it will not run")
	case kindConnInDoubt:
		return nil, unknown, 0, status.Errorf(codes.Unavailable, "forward: in doubt: primary connection failed after the statement was sent: %v", serr.err)
	case kindConnRecorded:
		// No outcome trailer: the client asks again with the same ID, and
		// the ID's row decides whether it runs.
		return nil, recorded, 0, status.Errorf(codes.Unavailable, "forward: primary connection failed after the statement was sent; a retry with its request ID settles it: %v", serr.err)
	case kindTooLarge:
		setTrailer(ctx, limited(metadata.MD{}, "MaxResponseBytes"))
	}
	return nil, notCommitted, 0, statusOf(serr)
}

func (s *service) Resolve(ctx context.Context, req *forwardpb.ResolveRequest) (*forwardpb.ResolveResponse, error) {
	x := s.x
	if err := x.authorize(ctx, forwardpb.Executor_Resolve_FullMethodName); err != nil {
		return nil, err
	}
	u := req.GetUnit()
	id, err := unitID(u)
	if err != nil {
		return nil, err
	}
	resp := &forwardpb.ResolveResponse{Instance: x.instance}
	e := x.ledger.lookup(id, time.Now())
	if e == nil {
		switch {
		case u.GetAttempt() <= 1:
			// A first attempt is never resolved: this asks who the
			// executor is (the client learning its instance).
			resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
			return resp, nil
		case x.recordsSQL():
			return x.resolveDurable(ctx, []byte(id), resp)
		case u.GetInstance() != x.instance:
			resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
			return resp, nil
		}
		// Every unit this process received within the window is in the
		// ledger: the unit never arrived. A tombstone keeps it from
		// running should it still arrive, so the answer stays true.
		var fresh bool
		if e, fresh = x.ledger.tombstone(id, time.Now()); fresh {
			resp.Outcome = forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED
			return resp, nil
		}
		if e == nil {
			// No room for a tombstone: the answer could not stay true.
			resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
			return resp, nil
		}
	}
	// Give a running unit the request's time to finish.
	if err := x.ledger.wait(ctx, e); err != nil {
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_RUNNING
		return resp, nil
	}
	v := x.ledger.view(e)
	switch v.state {
	case committed:
		resp.Outcome, resp.CommitLsn = forwardpb.ResolveResponse_OUTCOME_COMMITTED, uint64(v.lsn)
		var tr forwardpb.TxResponse
		if v.kind == answerTx && proto.Unmarshal(v.answer, &tr) == nil {
			resp.Result = tr.GetCommitted().GetResult()
		}
	case notCommitted:
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED
	case recorded:
		if x.recordsSQL() {
			return x.resolveDurable(ctx, []byte(id), resp)
		}
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
	default:
		resp.Outcome = forwardpb.ResolveResponse_OUTCOME_UNKNOWN
	}
	return resp, nil
}

// resolveDurable answers Resolve for an ID this process does not hold,
// from the deduplication table. It reads the primary, so it takes a slot
// like any unit.
func (x *Executor) resolveDurable(ctx context.Context, id []byte, resp *forwardpb.ResolveResponse) (*forwardpb.ResolveResponse, error) {
	if err := x.acquireSlot(ctx, false); err != nil {
		return nil, x.slotError(ctx, err)
	}
	defer x.releaseSlot(false)
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
	resp.Outcome, resp.CommitLsn = forwardpb.ResolveResponse_OUTCOME_COMMITTED, uint64(x.normalize(ctx, c.Conn(), text))
	return resp, nil
}
