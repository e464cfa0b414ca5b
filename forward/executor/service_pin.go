package executor

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// Pin runs units one after another on one primary connection, held for as
// long as the stream lasts: a client's pinned connection (a db.Connection
// block that set session state or began a transaction). Each unit is a
// transaction as on Tx — a TxBegin with commit set is one statement in
// autocommit — with its own request ID in the ledger, so that a unit whose
// reply is lost can be resolved as any other.
//
// The connection's session state lives as long as the pin: what one unit
// sets, the next sees, and no other caller does. When the stream ends the
// connection goes back to the pool, or is closed when a unit may have left
// session state on it (see sessionstate.go). The pin holds one of the
// transaction slots throughout; it ends when idle for TxIdleTimeout
// between units, and its units are bounded as transactions are.
func (s *service) Pin(stream forwardpb.Executor_PinServer) error {
	x := s.x
	ctx := stream.Context()
	if err := x.authorize(ctx, forwardpb.Executor_Pin_FullMethodName); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := newInbox(ctx, stream.Recv)
	var uc *unitConn
	defer func() {
		if uc != nil {
			uc.release()
			x.openTx.Add(-1)
		}
	}()
	for {
		m, err := in.next(ctx, x.cfg.TxIdleTimeout)
		switch {
		case errors.Is(err, io.EOF):
			return nil // the client is done with its connection
		case errors.Is(err, errIdle):
			stream.SetTrailer(limited(trailer(protocol.OutcomeNotRun, 0), "TxIdleTimeout"))
			return status.Errorf(codes.DeadlineExceeded, "forward: pinned connection idle for %v (the executor's TxIdleTimeout); closed", x.cfg.TxIdleTimeout)
		case err != nil:
			return err
		}
		b, begin, e, err := x.admitBegin(ctx, stream, m)
		if err != nil {
			return err
		}
		if uc == nil {
			if uc, err = x.startUnit(ctx, e, b.GetUnit(), true); err != nil {
				return err
			}
			x.openTx.Add(1)
		}
		t := &txRun{x: x, out: stream, in: in, entry: e, conn: uc.conn(), readOnly: b.GetReadOnly()}
		if err := t.run(ctx, begin, b.GetFirst(), b.GetCommit()); err != nil {
			return err
		}
	}
}
