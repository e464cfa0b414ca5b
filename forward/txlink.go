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
	c *Client
	bidi
}

// bidi is an open Tx or Pin stream (both carry TxRequest and TxResponse)
// with the goroutine that reads its replies.
type bidi struct {
	stream forwardpb.Executor_TxClient
	cancel context.CancelFunc
	resps  chan txReply
	reader chan struct{} // closed when the reading goroutine has ended
	on     connID
}

// openBidi opens a stream with open under sctx (cancel ends it), the
// opening bounded by the statement's time (ctx and the client's timeout),
// and starts reading its replies. Opening sends nothing that could run.
func (c *Client) openBidi(ctx, sctx context.Context, cancel context.CancelFunc, open func(context.Context) (forwardpb.Executor_TxClient, error)) (bidi, error) {
	octx, ocancel := c.unitContext(ctx)
	defer ocancel()
	type opened struct {
		s   forwardpb.Executor_TxClient
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := open(sctx)
		ch <- opened{s, err}
	}()
	var o opened
	select {
	case o = <-ch:
	case <-octx.Done():
		cancel()
		if o = <-ch; o.err == nil {
			o.err = octx.Err()
		}
	}
	if o.err != nil {
		cancel()
		return bidi{}, o.err
	}
	b := bidi{stream: o.s, cancel: cancel, on: connOfStream(o.s.Context()), resps: make(chan txReply, 1), reader: make(chan struct{})}
	go b.read()
	return b, nil
}

func (l *txStream) open(ctx, txCtx context.Context, begin *forwardpb.TxBegin) (error, error) {
	c := l.c
	if err := c.awaitReady(ctx); err != nil {
		return ErrUnavailable, err
	}
	sctx, cancel := context.WithCancel(txCtx)
	b, err := c.openBidi(ctx, sctx, cancel, func(sctx context.Context) (forwardpb.Executor_TxClient, error) { return c.api.Tx(sctx) })
	if err != nil {
		return ErrUnavailable, err
	}
	l.bidi = b
	// A failed Send transmitted nothing: the executor never saw a COMMIT
	// and rolls back whatever it began when the stream ends.
	if err := l.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: begin}}); err != nil {
		return ErrTxAborted, withCtxErr(l.recvError(err), ctx, txCtx)
	}
	return nil, nil
}

// read receives the stream's replies until it ends; the client reads each
// before it sends the next message, or the next part of a result.
func (l *bidi) read() {
	defer close(l.reader)
	for {
		r, err := l.stream.Recv()
		l.resps <- txReply{r, err}
		if err != nil {
			return
		}
	}
}

func (l *bidi) send(m *forwardpb.TxRequest) error { return l.stream.Send(m) }

func (l *bidi) replies() <-chan txReply { return l.resps }

// recvError returns the stream's real error after Send failed: gRPC
// reports only io.EOF from Send and keeps the status for Recv.
func (l *bidi) recvError(sendErr error) error {
	select {
	case r := <-l.resps:
		if r.err != nil {
			return r.err
		}
	case <-time.After(time.Second):
	}
	return sendErr
}

func (l *bidi) trailer() metadata.MD {
	if l.stream == nil {
		return nil
	}
	return l.stream.Trailer()
}

func (l *bidi) conn() connID { return l.on }

// end cancels the stream and waits for the reading goroutine.
func (l *bidi) end() {
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

func (l *txStream) lone(ctx context.Context, st *forwardpb.Statement, id []byte, rcpt *Receipt, end func(error, bool) error) (*answer, error) {
	resp, err := l.c.execUnit(ctx, "tx", st, id, rcpt)
	return l.c.lone(ctx, "tx", id, resp, err, rcpt, end)
}

// close ends the stream: a transaction's own stream ends with it.
func (l *txStream) close(bool) { l.end() }
