package executor

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// maxSessionUnits bounds the statements one session runs at once; the
// executor's own MaxConcurrent still bounds them all together. More are
// refused as busy rather than queued without limit.
const maxSessionUnits = 4096

// Session runs statements sent as messages of one stream, each exactly as
// Exec would (same ledger, same limits, same answers), concurrently; a
// cancel message, or the stream's end, cancels those still running.
//
// Memory is bounded by SessionMaxBytes: the requests received and the
// replies not yet sent count against it, and while it is used up the
// handler stops receiving (gRPC flow control then holds the client back)
// instead of buffering a client that sends faster than it reads.
func (s *service) Session(stream forwardpb.Executor_SessionServer) error {
	x := s.x
	ctx := stream.Context()
	if err := x.authorize(ctx, forwardpb.Executor_Session_FullMethodName); err != nil {
		return err
	}
	ss := &sessionRun{x: x, stream: stream, running: map[uint64]context.CancelFunc{}, room: make(chan struct{}, 1)}
	defer ss.stop()
	for {
		if err := ss.awaitRoom(ctx); err != nil {
			return err
		}
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		ss.handle(ctx, m)
	}
}

// sessionRun is the state of one Session stream.
type sessionRun struct {
	x      *Executor
	stream forwardpb.Executor_SessionServer
	sendMu sync.Mutex
	wg     sync.WaitGroup

	mu      sync.Mutex
	running map[uint64]context.CancelFunc
	held    int           // bytes of requests received and replies not yet sent
	room    chan struct{} // signalled when held drops
}

// stop cancels the statements still running and waits for them.
func (ss *sessionRun) stop() {
	ss.mu.Lock()
	for _, cancel := range ss.running {
		cancel()
	}
	ss.mu.Unlock()
	ss.wg.Wait()
}

// awaitRoom waits until the session holds less than its byte budget.
func (ss *sessionRun) awaitRoom(ctx context.Context) error {
	for {
		ss.mu.Lock()
		full := ss.held >= ss.x.cfg.SessionMaxBytes
		ss.mu.Unlock()
		if !full {
			return nil
		}
		select {
		case <-ss.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// hold adds n bytes to what the session holds (n < 0 gives them back).
func (ss *sessionRun) hold(n int) {
	ss.mu.Lock()
	ss.held += n
	ss.mu.Unlock()
	if n < 0 {
		select {
		case ss.room <- struct{}{}:
		default:
		}
	}
}

func (ss *sessionRun) send(r *forwardpb.SessionResponse) {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	ss.stream.Send(r) // a broken stream ends the Recv loop too
}

// handle starts one message's statement, or cancels one.
func (ss *sessionRun) handle(ctx context.Context, m *forwardpb.SessionRequest) {
	seq := m.GetSeq()
	if m.GetCancel() {
		ss.mu.Lock()
		if cancel, ok := ss.running[seq]; ok {
			cancel()
		}
		ss.mu.Unlock()
		return
	}
	var (
		uctx   context.Context
		cancel context.CancelFunc
	)
	if t := m.GetTimeoutMicros(); t > 0 {
		uctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Microsecond)
	} else {
		uctx, cancel = context.WithCancel(ctx)
	}
	ss.mu.Lock()
	_, dup := ss.running[seq]
	full := len(ss.running) >= maxSessionUnits
	if !dup && !full {
		ss.running[seq] = cancel
	}
	ss.mu.Unlock()
	if dup || full {
		cancel()
		msg := "forward: executor busy: too many statements on one session"
		if dup {
			msg = "forward: statement number " + strconv.FormatUint(seq, 10) + " already running on this session"
		}
		ss.send(&forwardpb.SessionResponse{Seq: seq, Status: &forwardpb.SessionStatus{Code: int32(codes.ResourceExhausted), Message: msg, Outcome: protocol.OutcomeNotRun, Refusal: protocol.RefusalBusy}})
		return
	}
	reqBytes := proto.Size(m)
	ss.hold(reqBytes)
	ss.wg.Add(1)
	go func(req *forwardpb.ExecRequest, headers map[string]string) {
		defer cancel()
		ss.run(uctx, seq, req, headers, func(r *forwardpb.SessionResponse) {
			// The statement's answer: the session is done with it, even
			// when the statement goes on while its client fetches the rest
			// of its result on a stream of its own.
			defer ss.wg.Done()
			ss.mu.Lock()
			delete(ss.running, seq)
			ss.mu.Unlock()
			n := proto.Size(r)
			ss.hold(n - reqBytes) // the request is done with, the reply waits to be sent
			ss.send(r)
			ss.hold(-n)
		})
	}(m.GetExec(), m.GetHeaders())
}

// run runs one statement of the session and gives its answer to answer.
func (ss *sessionRun) run(ctx context.Context, seq uint64, req *forwardpb.ExecRequest, headers map[string]string, answer func(*forwardpb.SessionResponse)) {
	var end func(error)
	if ss.x.cfg.SessionUnit != nil {
		ctx, end = ss.x.cfg.SessionUnit(ctx, headers)
	}
	ss.x.runLone(ctx, req, end, func(a loneAnswer) {
		if a.err == nil {
			answer(&forwardpb.SessionResponse{Seq: seq, Exec: a.resp})
			return
		}
		fail := protocol.SessionStatus(a.err, a.md)
		answer(&forwardpb.SessionResponse{Seq: seq, Status: fail})
	})
}
