package executor

import (
	"context"
	"errors"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
)

// inbox receives a transaction stream's messages on a goroutine of its
// own, so that the idle limit can interrupt the wait for the next one, and
// so that a statement sending its result in parts can see a discard
// arrive.
//
// Messages are taken in the order they came: a discard that arrives after
// the statement it meant has ended is taken (and dropped) by next before
// any later statement, so it never ends another statement's result.
type inbox struct {
	msgs    chan *forwardpb.TxRequest
	errs    chan error
	pending *forwardpb.TxRequest // taken from msgs by discarded, not yet by next
}

// errIdle: no message came within the idle limit.
var errIdle = errors.New("idle")

// newInbox starts receiving with recv until it fails or ctx ends (the
// stream's handler returned).
func newInbox(ctx context.Context, recv func() (*forwardpb.TxRequest, error)) *inbox {
	in := &inbox{msgs: make(chan *forwardpb.TxRequest), errs: make(chan error, 1)}
	go func() {
		for {
			m, err := recv()
			if err != nil {
				in.errs <- err
				return
			}
			select {
			case in.msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return in
}

// txInbox is the inbox of a Tx stream.
func txInbox(ctx context.Context, stream forwardpb.Executor_TxServer) *inbox {
	return newInbox(ctx, stream.Recv)
}

// next returns the next message other than a stale discard, waiting at
// most idle (0: no limit) and until ctx ends. Errors: the stream's (io.EOF
// when the client closed it), errIdle or ctx's.
func (in *inbox) next(ctx context.Context, idle time.Duration) (*forwardpb.TxRequest, error) {
	var expired <-chan time.Time
	if idle > 0 {
		t := time.NewTimer(idle)
		defer t.Stop()
		expired = t.C
	}
	for {
		m := in.pending
		in.pending = nil
		if m == nil {
			select {
			case m = <-in.msgs:
			case err := <-in.errs:
				in.errs <- err // every later call fails alike
				return nil, err
			case <-expired:
				return nil, errIdle
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if !isDiscard(m) {
			return m, nil
		}
	}
}

// discarded reports, without waiting, whether the client asked to
// discard the result being sent. Another message (which a client sends
// only once the result is over) is kept for next.
func (in *inbox) discarded() bool {
	if in.pending == nil {
		select {
		case m := <-in.msgs:
			in.pending = m
		default:
			return false
		}
	}
	if isDiscard(in.pending) {
		in.pending = nil
		return true
	}
	return false
}

func isDiscard(m *forwardpb.TxRequest) bool {
	return m.GetDiscard() != nil
}

// partFlow sends one statement's result in parts until the client
// discards it or a send fails; then it drops them (the statement is still
// read to its end, as pgx's Rows.Close reads a result to its end).
type partFlow struct {
	in      *inbox
	send    func(*forwardpb.Result) error
	sent    bool // a part went out: the result is not whole in its last part
	dropped bool // parts are dropped: the last part goes without rows
}

func (in *inbox) flow(send func(*forwardpb.Result) error) *partFlow {
	return &partFlow{in: in, send: send}
}

// sink is the flow's partSink.
func (f *partFlow) sink() partSink {
	return func(part *forwardpb.Result) {
		if f.dropped || f.in.discarded() {
			f.dropped = true
			return
		}
		f.sent = true
		if f.send(part) != nil {
			f.dropped = true // the stream is gone; its end cancels the unit
		}
	}
}

// last prepares the result's last part for sending: without rows when the
// client discarded the result.
func (f *partFlow) last(res *forwardpb.Result) *forwardpb.Result {
	if f != nil && f.dropped && res != nil {
		res.Rows, res.RowCount = nil, 0
	}
	return res
}

// whole reports whether the result went in one piece (it can be kept for a
// retry).
func (f *partFlow) whole() bool { return f == nil || !f.sent }
