package forward

import (
	"context"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// Results arrive in parts: the executor reads a statement's rows from the
// primary and sends them on as it goes, a part at a time, and the client
// hands them to the caller as it reads. Memory on either side is a part or
// two (and what gRPC's flow control lets travel), whatever the result's
// size; a caller that reads slowly holds back the executor, which holds
// back the primary, as on a direct connection. As with pgx, a statement
// that fails after some rows — or whose COMMIT fails after its rows, for a
// statement in its own transaction — reports that after the rows, as the
// rows' error; closing the rows early reads the rest on the primary (the
// statement runs to its end) without sending it.

// answer is a statement's result as the driver hands it to database/sql:
// whole, or its first part and how to get the others.
type answer struct {
	res     *forwardpb.Result
	next    func() (*forwardpb.Result, error) // the next part, while res or the last part had More
	discard func() error                      // ends the result early
	endErr  error                             // follows the rows: the statement's COMMIT failed
}

// rows returns the answer as driver.Rows decoded with m.
func (a *answer) rows(m *pgtype.Map) (driver.Rows, error) {
	rows, err := wire.NewRows(a.res, m)
	if err != nil {
		if a.discard != nil {
			a.discard()
		}
		return nil, err
	}
	if a.next != nil {
		rows.Continue(a.next, a.discard)
	}
	if a.endErr != nil {
		rows.FailAtEnd(a.endErr)
	}
	return rows, nil
}

// lone turns the executor's answer to a lone statement (or the failure to
// get one) into the driver's: it records a commit in rcpt, and fetches the
// rest of a result that continues on a Fetch stream. end is told the
// statement's outcome once known — nil, or its failure, atCommit when its
// COMMIT failed after its result — and returns what the caller sees at
// the end of the rows (see loneEnd).
func (c *Client) lone(ctx context.Context, op string, id []byte, resp *forwardpb.ExecResponse, err error, rcpt *Receipt, end func(err error, atCommit bool) error) (*answer, error) {
	if err != nil {
		return nil, end(err, false)
	}
	if pe := resp.GetError(); pe != nil {
		perr := wire.PgErrorFromProto(pe)
		if resp.GetResult() == nil {
			return nil, end(perr, false)
		}
		return &answer{res: resp.GetResult(), endErr: end(perr, true)}, nil
	}
	if tok := resp.GetFetch(); len(tok) > 0 && resp.GetResult().GetMore() {
		f := c.fetch(ctx, op, tok, id, rcpt, end)
		return &answer{res: resp.GetResult(), next: f.next, discard: f.discard}, nil
	}
	rcpt.commit(lsn.LSN(resp.GetCommitLsn()))
	if err := end(nil, false); err != nil {
		return nil, err
	}
	return &answer{res: resp.GetResult()}, nil
}

// loneEnd reports a lone statement's outcome to its caller as it is: a
// COMMIT that fails after the rows is their error, as pgx reports it.
func loneEnd(err error, _ bool) error { return err }

// fetcher takes the rest of a lone statement's result from the Fetch
// stream opened with its answer's token.
type fetcher struct {
	c       *Client
	ctx     context.Context // the caller's, for the statement's rows
	op      string
	id      []byte
	rcpt    *Receipt
	end     func(err error, atCommit bool) error
	stream  forwardpb.Executor_FetchClient
	cancel  context.CancelFunc
	conn    connID
	openErr error
	done    bool
}

// fetch opens the Fetch stream for token at once, so that the executor
// can send the next parts while the caller reads the first.
func (c *Client) fetch(ctx context.Context, op string, token, id []byte, rcpt *Receipt, end func(error, bool) error) *fetcher {
	f := &fetcher{c: c, ctx: ctx, op: op, id: id, rcpt: rcpt, end: end}
	fctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	c.rpcs.Add(1)
	rcpt.roundTrip()
	if f.stream, f.openErr = c.api.Fetch(fctx); f.openErr == nil {
		f.conn = connOfStream(f.stream.Context())
		f.openErr = f.stream.Send(&forwardpb.FetchRequest{Token: token})
	}
	return f
}

// next returns the next part; the last comes with the statement's outcome.
func (f *fetcher) next() (*forwardpb.Result, error) {
	if f.done {
		return nil, errors.New("forward: fetch: the result has ended")
	}
	if f.openErr != nil {
		return f.finish(nil, f.end(f.lost(f.openErr), false))
	}
	m, err := f.stream.Recv()
	if err != nil {
		return f.finish(nil, f.end(f.lost(err), false))
	}
	if m.GetResult().GetMore() && m.GetError() == nil {
		return m.GetResult(), nil
	}
	if pe := m.GetError(); pe != nil {
		// With its last part: its COMMIT failed; without: it failed
		// after the parts before.
		return f.finish(m.GetResult(), f.end(wire.PgErrorFromProto(pe), m.GetResult() != nil))
	}
	f.rcpt.commit(lsn.LSN(m.GetCommitLsn()))
	return f.finish(m.GetResult(), f.end(nil, false))
}

func (f *fetcher) finish(last *forwardpb.Result, err error) (*forwardpb.Result, error) {
	f.done = true
	f.cancel()
	return last, err
}

// discard asks for no more parts and waits for the statement's end.
func (f *fetcher) discard() error {
	if f.openErr == nil {
		f.stream.Send(&forwardpb.FetchRequest{Discard: true})
	}
	for !f.done {
		if _, err := f.next(); f.done {
			return err
		}
	}
	return nil
}

// lost learns the outcome of a statement whose Fetch stream failed: from
// the executor's answer when it gave one, else by asking about the
// statement's request ID.
func (f *fetcher) lost(cause error) error {
	c := f.c
	reqID := hex.EncodeToString(f.id)
	if f.stream != nil && status.Code(cause) != codes.NotFound {
		// NotFound: the executor no longer holds the result; only the
		// statement's request ID can tell.
		if e := c.failure(f.op, f.id, cause, f.stream.Trailer()); e != nil {
			var ce *CommittedError
			if errors.As(e, &ce) {
				f.rcpt.commit(ce.LSN)
			}
			return e
		}
	}
	if f.ctx.Err() != nil {
		return &Error{Op: f.op, Target: c.cfg.Target, RequestID: reqID, Kind: ErrInDoubt, Err: fmt.Errorf("%w (while its result was read: %v)", f.ctx.Err(), cause)}
	}
	out, commitLSN, _, err := c.learn(f.ctx, f.id, f.conn, time.Now().Add(protocol.RetryHorizon), f.rcpt)
	switch out {
	case OutcomeCommitted:
		f.rcpt.commit(commitLSN)
		return &CommittedError{Op: f.op, RequestID: reqID, LSN: commitLSN, Reason: fmt.Sprintf("the rest of its result was lost (%v)", cause)}
	case OutcomeNotCommitted:
		return &Error{Op: f.op, Target: c.cfg.Target, RequestID: reqID, Kind: ErrTxAborted, Err: fmt.Errorf("the statement did not commit; its result was cut off: %v", cause)}
	}
	if err == nil {
		err = cause
	}
	return &Error{Op: f.op, Target: c.cfg.Target, RequestID: reqID, Kind: ErrInDoubt, Err: err}
}

// learn asks the executor what became of unit id, whose answer was lost
// on connection conn, until deadline or ctx's end. OutcomeRunning means
// that no final answer came in time; err is the last failure met.
func (c *Client) learn(ctx context.Context, id []byte, conn connID, deadline time.Time, rcpt *Receipt) (Outcome, lsn.LSN, *forwardpb.Result, error) {
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	// The executor that ran the unit is the one at the other end of its
	// connection, once known there.
	inst := c.inst.of(conn)
	backoff := retryBackoffMin
	var lastErr error
	for rctx.Err() == nil {
		rcpt.roundTrip()
		if inst == "" {
			inst = c.inst.of(conn)
		}
		out, commitLSN, res, err := c.resolve(rctx, id, inst)
		if err != nil {
			lastErr = err
		} else if out != OutcomeRunning {
			return out, commitLSN, res, nil
		}
		c.backOff(rctx, backoff)
		backoff = min(backoff*2, retryBackoffMax)
	}
	return OutcomeRunning, 0, nil, lastErr
}

// backOff counts a retry and waits d before it, or until ctx ends.
func (c *Client) backOff(ctx context.Context, d time.Duration) {
	c.retries.Add(1)
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
