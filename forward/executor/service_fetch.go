package executor

import (
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
)

// A lone statement (on Exec or a session) whose client takes results in
// parts is answered with its whole result when that fits in one part, and
// otherwise with its first part and a fetch token; the other parts and the
// statement's outcome go on a Fetch stream that the client opens with the
// token. So a large result, or one its caller reads slowly, holds up only
// its own stream: a session carries many callers' statements, and the
// messages of one stream travel in order. The statement goes on meanwhile
// on its connection, as it would on a direct one while its rows are read,
// and commits once its result has been read to the end.

// fetchAttachWait bounds how long a statement whose first part was sent
// waits for its client to open the Fetch stream (a client opens it as soon
// as the first part arrives); then the statement is cancelled.
const fetchAttachWait = 30 * time.Second

// loneAnswer is the answer to a lone statement, as a call would return it.
type loneAnswer struct {
	resp *forwardpb.ExecResponse
	err  error
	md   metadata.MD // the call's trailer
}

// execAnswer runs the lone statement req for Exec and returns its answer.
// A statement that takes parts runs on a goroutine of its own, which goes
// on after the answer while the client fetches the rest.
func (x *Executor) execAnswer(ctx context.Context, req *forwardpb.ExecRequest) loneAnswer {
	if !req.GetStatement().GetParts() {
		sink := &trailerSink{}
		resp, err := x.serveExec(context.WithValue(ctx, trailerSinkKey{}, sink), req, nil)
		return loneAnswer{resp, err, sink.md}
	}
	ch := make(chan loneAnswer, 1)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		x.runLone(ctx, req, nil, func(a loneAnswer) { ch <- a })
	}()
	return <-ch
}

// runLone runs the lone statement req and calls answer exactly once with
// its answer, which is its first part when the result continues; then it
// returns once the Fetch stream has taken the rest (or the statement was
// cancelled for want of one). Until the answer, ctx's end cancels the
// statement; after it, the Fetch stream's end does. done, if set, gets the
// statement's final error.
func (x *Executor) runLone(ctx context.Context, req *forwardpb.ExecRequest, done func(error), answer func(loneAnswer)) {
	sink := &trailerSink{}
	if !req.GetStatement().GetParts() {
		// A result that comes whole (an Exec's, whose rows are dropped):
		// the statement ends with its answer, under ctx alone.
		resp, err := x.serveExec(context.WithValue(ctx, trailerSinkKey{}, sink), req, nil)
		if done != nil {
			done(err)
		}
		answer(loneAnswer{resp, err, sink.md})
		return
	}
	sctx := context.WithValue(context.WithoutCancel(ctx), trailerSinkKey{}, sink)
	var cancel context.CancelFunc
	if d, ok := ctx.Deadline(); ok {
		sctx, cancel = context.WithDeadline(sctx, d)
	} else {
		sctx, cancel = context.WithCancel(sctx)
	}
	defer cancel()
	r := &relay{x: x, ctx: sctx, cancel: cancel, answer: answer, attached: make(chan struct{})}
	r.stopCaller = context.AfterFunc(ctx, cancel)
	defer r.stopCaller()
	resp, err := x.serveExec(sctx, req, r.emit)
	if done != nil {
		done(err)
	}
	if !r.handedOff {
		answer(loneAnswer{resp, err, sink.md})
		return
	}
	r.finish(resp, err, sink.md)
}

// relay carries a lone statement's result beyond its first part.
type relay struct {
	x          *Executor
	ctx        context.Context // the statement's
	cancel     context.CancelFunc
	stopCaller func() bool // stops the caller's end from cancelling the statement
	answer     func(loneAnswer)
	token      string
	handedOff  bool // the first part answered the statement
	dropped    bool // parts are no longer sent

	mu       sync.Mutex
	fs       *fetchStream  // the Fetch stream, once attached
	attached chan struct{} // closed when it is
	closed   bool          // no Fetch stream may attach any more
}

// fetchStream is a Fetch call waiting for, or receiving, a relay's parts.
type fetchStream struct {
	stream  forwardpb.Executor_FetchServer
	discard atomic.Bool // the client asked for no more parts
	end     chan error  // the call's outcome, once the statement ended
}

// emit is the statement's partSink: the first part answers the statement,
// the others go to the Fetch stream.
func (r *relay) emit(part *forwardpb.Result) {
	if r.dropped {
		return
	}
	if !r.handedOff {
		r.handoff(part)
		return
	}
	fs := r.stream()
	if fs == nil || fs.discard.Load() || fs.stream.Send(&forwardpb.ExecResponse{Result: part}) != nil {
		r.dropped = true
	}
}

// handoff answers the statement with its first part and a fetch token.
func (r *relay) handoff(part *forwardpb.Result) {
	if !r.stopCaller() {
		// The caller is gone, and the statement cancelled: it ends as
		// it would have, answered to nobody.
		r.dropped = true
		return
	}
	var b [16]byte
	rand.Read(b[:])
	r.token = string(b[:])
	r.handedOff = true
	r.x.fetches.Store(r.token, r)
	// From here the statement belongs to the executor, not to the call
	// or session that started it.
	r.x.wg.Add(1)
	r.answer(loneAnswer{resp: &forwardpb.ExecResponse{Result: part, Fetch: b[:], Instance: r.x.instance}})
}

// attach hands the relay its Fetch stream; false if it no longer takes
// one.
func (r *relay) attach(fs *fetchStream) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.fs != nil {
		return false
	}
	r.fs = fs
	close(r.attached)
	// The caller's end now is the fetching client's.
	context.AfterFunc(fs.stream.Context(), r.cancel)
	return true
}

// stream returns the Fetch stream, waiting for it to attach; nil when it
// does not within fetchAttachWait (the statement is then cancelled), or
// when the statement or the executor ends first.
func (r *relay) stream() *fetchStream {
	t := time.NewTimer(fetchAttachWait)
	defer t.Stop()
	select {
	case <-r.attached:
	case <-t.C:
	case <-r.ctx.Done():
	case <-r.x.stop:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fs == nil {
		r.closed = true
		r.cancel()
	}
	return r.fs
}

// finish sends the statement's outcome (its last part and commit LSN, or
// its failure) on the Fetch stream.
func (r *relay) finish(resp *forwardpb.ExecResponse, err error, md metadata.MD) {
	defer r.x.wg.Done()
	fs := r.stream()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.x.fetches.Delete(r.token)
	if fs == nil {
		return
	}
	if err == nil {
		if r.dropped || fs.discard.Load() {
			resp.Result.Rows, resp.Result.RowCount = nil, 0
		}
		err = fs.stream.Send(resp)
	}
	if md != nil {
		fs.stream.SetTrailer(md)
	}
	fs.end <- err
}

// Fetch takes the rest of a lone statement's result: see relay.
func (s *service) Fetch(stream forwardpb.Executor_FetchServer) error {
	x := s.x
	ctx := stream.Context()
	if err := x.authorize(ctx, forwardpb.Executor_Fetch_FullMethodName); err != nil {
		return err
	}
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	v, ok := x.fetches.Load(string(m.GetToken()))
	fs := &fetchStream{stream: stream, end: make(chan error, 1)}
	if !ok || !v.(*relay).attach(fs) {
		return status.Error(codes.NotFound, "forward: no result to fetch for this token: the statement ended, or was cancelled when its client did not fetch the rest in time")
	}
	fs.discard.Store(m.GetDiscard())
	go func() {
		// Ends when the call does (Recv then fails).
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if m.GetDiscard() {
				fs.discard.Store(true)
			}
		}
	}()
	return <-fs.end
}
