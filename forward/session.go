package forward

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// A session carries lone statements to the executor as messages of one
// long-lived stream (Executor.Session) instead of one call each: a call
// costs both sides a new HTTP/2 stream, its headers and its authentication,
// a message only its bytes. Exactly-once works as for Exec: each statement
// keeps its request ID, and when the session breaks its statements are
// asked again, with the same IDs, on a new session or a call.
type session struct {
	c      *Client
	stream forwardpb.Executor_SessionClient
	cancel context.CancelFunc
	conn   connID // the connection the stream runs on

	sendTurn chan struct{} // holds one token: gRPC allows one sender at a time
	learned  atomic.Bool   // the instance of conn is noted

	mu      sync.Mutex
	pending map[uint64]chan *forwardpb.SessionResponse
	seq     uint64
	dead    error         // set once the stream failed
	done    chan struct{} // closed when the reader has ended
}

// sessionCount is how many sessions a client spreads statements over:
// messages of one stream travel in order, so a large result on one session
// delays the others' answers only on that session.
const sessionCount = 4

// maxSessionMessage is the largest statement sent on a session; larger
// ones go as calls of their own. It is far below any sensible
// MaxRequestBytes of the executor, and sending such a statement costs far
// more than opening a call.
const maxSessionMessage = 64 << 10

// session returns one of the client's live sessions, opening it if needed,
// or nil when sessions are off or one cannot be opened now (the caller then
// makes a call instead).
func (c *Client) session(ctx context.Context) *session {
	if c.cfg.NoSessions || c.sessionsOff.Load() {
		return nil
	}
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	c.sessNext = (c.sessNext + 1) % sessionCount
	slot := &c.sess[c.sessNext]
	if s := *slot; s != nil && s.alive() {
		return s
	}
	sctx, cancel := context.WithCancel(c.baseCtx)
	st, err := c.api.Session(sctx)
	if err != nil {
		cancel()
		return nil
	}
	s := &session{c: c, stream: st, cancel: cancel, conn: connOfStream(st.Context()), sendTurn: make(chan struct{}, 1),
		pending: map[uint64]chan *forwardpb.SessionResponse{}, done: make(chan struct{})}
	c.wg.Add(1)
	go s.read()
	*slot = s
	return s
}

// notSent marks a session failure that happened before the statement left.
type notSent struct{ error }

func (e notSent) Unwrap() error { return e.error }

func (s *session) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead == nil
}

// read delivers answers until the stream ends, then fails what is pending.
func (s *session) read() {
	defer s.c.wg.Done()
	defer close(s.done)
	for {
		r, err := s.stream.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		if inst := r.GetExec().GetInstance(); inst != "" && !s.learned.Load() {
			s.c.inst.note(s.conn, inst)
			s.learned.Store(true)
		}
		s.mu.Lock()
		ch := s.pending[r.GetSeq()]
		delete(s.pending, r.GetSeq())
		s.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// fail ends the session: every statement still pending learns that its
// answer will not come (each channel holds one value, so this never
// blocks).
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.dead == nil {
		s.dead = err
	}
	pending := s.pending
	s.pending = map[uint64]chan *forwardpb.SessionResponse{}
	s.mu.Unlock()
	for _, ch := range pending {
		ch <- nil
	}
	s.cancel()
}

// exec sends one statement and waits for its answer. A failure comes back
// as the status and trailer a call of Exec would have given, so that the
// caller classifies both alike; a session that breaks, and a ctx that ends
// after the statement left, say that it may have been sent.
//
// Sending honours ctx too: a statement that cannot take its turn to send
// before ctx ends was not sent; one whose send blocks past ctx (the
// executor holds the stream back, or the network stalls) ends the session,
// whose other statements are then asked again elsewhere.
//
// req must be at most maxSessionMessage bytes.
func (s *session) exec(ctx context.Context, req *forwardpb.ExecRequest, md *metadata.MD) (*forwardpb.ExecResponse, error) {
	m := &forwardpb.SessionRequest{Exec: req}
	if h := s.c.cfg.SessionHeaders; h != nil {
		m.Headers = h(ctx)
	}
	select {
	case s.sendTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, notSent{status.FromContextError(ctx.Err()).Err()}
	}
	ch := make(chan *forwardpb.SessionResponse, 1)
	s.mu.Lock()
	if s.dead != nil {
		s.mu.Unlock()
		<-s.sendTurn
		return nil, notSent{status.Error(codes.Unavailable, "forward: session ended before the statement was sent")}
	}
	s.seq++
	seq := s.seq
	s.pending[seq] = ch
	s.mu.Unlock()
	m.Seq = seq
	if ctx.Err() != nil {
		s.mu.Lock()
		delete(s.pending, seq)
		s.mu.Unlock()
		<-s.sendTurn
		return nil, notSent{status.FromContextError(ctx.Err()).Err()}
	}
	if d, ok := ctx.Deadline(); ok {
		m.TimeoutMicros = max(1, time.Until(d).Microseconds())
	}
	// A send that ctx's end interrupts ends the session (gRPC may have
	// sent part of the message). A ctx that cannot end needs no watch.
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { s.fail(status.FromContextError(ctx.Err()).Err()) })
	}
	err := s.stream.Send(m)
	stopped := stop()
	<-s.sendTurn
	if err != nil {
		s.fail(err)
		if stopped {
			// gRPC transmitted nothing.
			return nil, notSent{status.Errorf(codes.Unavailable, "forward: session send: %v", err)}
		}
		// Ended by ctx while sending: part of it may have left.
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case r := <-ch:
		if r == nil {
			return nil, s.endedErr()
		}
		if ss := r.GetStatus(); ss != nil {
			st, t := protocol.FromSessionStatus(ss)
			*md = t.MD()
			s.dropIfNotServing(st.Code(), t.Outcome)
			return nil, st.Err()
		}
		return r.GetExec(), nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, seq)
		s.mu.Unlock()
		// Tell the executor to stop it, in the background: the outcome is
		// for the caller's retry logic (or Resolve) to learn.
		s.c.wg.Add(1)
		go s.cancelRemote(seq)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// cancelRemote asks the executor to cancel statement seq. It waits for its
// turn to send, which ends at the latest when the session fails.
func (s *session) cancelRemote(seq uint64) {
	defer s.c.wg.Done()
	select {
	case s.sendTurn <- struct{}{}:
	case <-s.done:
		return
	}
	// A send the executor holds back for long ends the session.
	t := time.AfterFunc(time.Second, func() { s.fail(status.Error(codes.Unavailable, "forward: session send stalled")) })
	s.stream.Send(&forwardpb.SessionRequest{Seq: seq, Cancel: true})
	t.Stop()
	<-s.sendTurn
}

// endedErr explains a session that ended while a statement waited. A
// session refused when it opened (bad credentials, another protocol, an
// executor without sessions) processed nothing: its status is the answer,
// and it was not sent. Otherwise the statement may have run.
func (s *session) endedErr() error {
	s.mu.Lock()
	dead := s.dead
	s.mu.Unlock()
	st, ok := status.FromError(dead)
	if ok {
		switch st.Code() {
		case codes.Unimplemented:
			s.c.sessionsOff.Store(true) // an older executor: make calls
			return notSent{status.Error(codes.Unavailable, "forward: the executor has no sessions")}
		case codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition:
			return notSent{dead}
		}
	}
	return status.Errorf(codes.Unavailable, "forward: session ended before the answer: %v", dead)
}
