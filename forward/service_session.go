package forward

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
)

// maxSessionUnits bounds the statements one session runs at once; the
// executor's own MaxConcurrent still bounds them all together. More are
// refused as busy rather than queued without limit.
const maxSessionUnits = 4096

// Session runs statements sent as messages of one stream, each exactly as
// Exec would (same ledger, same limits, same answers), concurrently; a
// cancel message, or the stream's end, cancels those still running.
func (s *service) Session(stream forwardpb.Executor_SessionServer) error {
	x := s.x
	ctx := stream.Context()
	if err := x.authorize(ctx, forwardpb.Executor_Session_FullMethodName); err != nil {
		return err
	}
	var (
		sendMu  sync.Mutex
		mu      sync.Mutex
		running = map[uint64]context.CancelFunc{}
		wg      sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for _, cancel := range running {
			cancel()
		}
		mu.Unlock()
		wg.Wait()
	}()
	send := func(r *forwardpb.SessionResponse) {
		sendMu.Lock()
		defer sendMu.Unlock()
		stream.Send(r) // a broken stream ends the Recv loop too
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		seq := m.GetSeq()
		if m.GetCancel() {
			mu.Lock()
			if cancel, ok := running[seq]; ok {
				cancel()
			}
			mu.Unlock()
			continue
		}
		uctx, cancel := context.WithCancel(ctx)
		if t := m.GetTimeoutMicros(); t > 0 {
			uctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Microsecond)
		}
		mu.Lock()
		_, dup := running[seq]
		full := len(running) >= maxSessionUnits
		if !dup && !full {
			running[seq] = cancel
		}
		mu.Unlock()
		if dup || full {
			cancel()
			msg := "forward: executor busy: too many statements on one session"
			if dup {
				msg = "forward: statement number " + strconv.FormatUint(seq, 10) + " already running on this session"
			}
			send(&forwardpb.SessionResponse{Seq: seq, Status: &forwardpb.SessionStatus{Code: int32(codes.ResourceExhausted), Message: msg, Outcome: outcomeNotRun}})
			continue
		}
		wg.Add(1)
		go func(req *forwardpb.ExecRequest, headers map[string]string) {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(running, seq)
				mu.Unlock()
				cancel()
			}()
			sink := &trailerSink{}
			ectx := context.WithValue(uctx, trailerSinkKey{}, sink)
			var end func(error)
			if x.cfg.SessionUnit != nil {
				ectx, end = x.cfg.SessionUnit(ectx, headers)
			}
			resp, err := x.exec(ectx, req)
			if end != nil {
				end(err)
			}
			r := &forwardpb.SessionResponse{Seq: seq, Exec: resp}
			if err != nil {
				st := status.Convert(err)
				ss := &forwardpb.SessionStatus{Code: int32(st.Code()), Message: st.Message(), Outcome: first(sink.md, trailerOutcome)}
				if v := first(sink.md, trailerLSN); v != "" {
					ss.CommitLsn, _ = strconv.ParseUint(v, 10, 64)
				}
				r.Exec, r.Status = nil, ss
			}
			send(r)
		}(m.GetExec(), m.GetHeaders())
	}
}
