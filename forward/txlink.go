package forward

import (
	"context"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/flypg/flypg/forward/forwardpb"
)

// txLink carries a forwarded transaction's messages: a Tx stream of its
// own (txStream), or the stream of the pinned connection the transaction
// runs in (pinLink).
type txLink interface {
	// open starts the transaction with begin, which carries its first
	// statement. On failure, kind says whether anything may have run.
	open(ctx, txCtx context.Context, begin *forwardpb.TxBegin) (kind, err error)
	// send sends one message; an error means it was not transmitted.
	send(*forwardpb.TxRequest) error
	// replies delivers the transaction's answers, and the stream's error.
	replies() <-chan txReply
	// recvError returns the stream's own error after send failed.
	recvError(sendErr error) error
	// trailer returns what the executor said when the stream ended.
	trailer() metadata.MD
	// conn is the connection the stream runs on.
	conn() connID
	// lone runs st as an autocommit unit with request ID id, for a
	// transaction of one statement; end is told its outcome (see
	// Client.lone).
	lone(ctx context.Context, st *forwardpb.Statement, id []byte, rcpt *Receipt, end func(err error, atCommit bool) error) (*answer, error)
	// close ends the transaction's use of the stream; broken says that
	// the transaction broke off before its end.
	close(broken bool)
}

// txStream is a transaction's own Tx stream.
type txStream struct {
	c      *Client
	stream forwardpb.Executor_TxClient
	cancel context.CancelFunc
	resps  chan txReply
	reader chan struct{} // closed when the reading goroutine has ended
	on     connID
}

func (l *txStream) open(ctx, txCtx context.Context, begin *forwardpb.TxBegin) (error, error) {
	c := l.c
	if err := c.awaitReady(ctx); err != nil {
		return ErrUnavailable, err
	}
	sctx, cancel := context.WithCancel(txCtx)
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
		return ErrUnavailable, o.err
	}
	l.stream, l.cancel = o.s, cancel
	l.on = connOfStream(o.s.Context())
	l.resps = make(chan txReply, 1)
	l.reader = make(chan struct{})
	go l.read()
	// A failed Send transmitted nothing: the executor never saw a COMMIT
	// and rolls back whatever it began when the stream ends.
	if err := l.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: begin}}); err != nil {
		return ErrTxAborted, withCtxErr(l.recvError(err), ctx, txCtx)
	}
	return nil, nil
}

// read receives the stream's replies until it ends; the client reads each
// before it sends the next message, or the next part of a result.
func (l *txStream) read() {
	defer close(l.reader)
	for {
		r, err := l.stream.Recv()
		l.resps <- txReply{r, err}
		if err != nil {
			return
		}
	}
}

func (l *txStream) send(m *forwardpb.TxRequest) error { return l.stream.Send(m) }

func (l *txStream) replies() <-chan txReply { return l.resps }

// recvError returns the stream's real error after Send failed: gRPC
// reports only io.EOF from Send and keeps the status for Recv.
func (l *txStream) recvError(sendErr error) error {
	select {
	case r := <-l.resps:
		if r.err != nil {
			return r.err
		}
	case <-time.After(time.Second):
	}
	return sendErr
}

func (l *txStream) trailer() metadata.MD {
	if l.stream == nil {
		return nil
	}
	return l.stream.Trailer()
}

func (l *txStream) conn() connID { return l.on }

func (l *txStream) lone(ctx context.Context, st *forwardpb.Statement, id []byte, rcpt *Receipt, end func(error, bool) error) (*answer, error) {
	resp, err := l.c.execUnit(ctx, "tx", st, id, rcpt)
	return l.c.lone(ctx, "tx", id, resp, err, rcpt, end)
}

// close cancels the stream and waits for the reading goroutine.
func (l *txStream) close(bool) {
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.cancel = nil
	for {
		select {
		case <-l.reader:
			return
		case <-l.resps: // drop, so that the reader can finish
		}
	}
}
