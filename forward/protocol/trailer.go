package protocol

import (
	"slices"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/lsn"
)

// Trailer is what the executor says about a unit that ended with a gRPC
// error: the typed form of the trailer keys above. An empty field is
// unsaid.
type Trailer struct {
	Outcome string  // OutcomeNotRun, OutcomeUnknown, OutcomeCommitted
	LSN     lsn.LSN // the commit LSN, with OutcomeCommitted
	Refusal string  // RefusalBusy, RefusalDatabase
	Limit   string  // the executor limit that refused or ended the unit
	// Unread: the call ended before the executor read its request
	// (TrailerRequest), so nothing of it ran.
	Unread bool
}

// ReadTrailer reads the trailer metadata of a call. Where a key was set
// more than once, the first value counts.
func ReadTrailer(md metadata.MD) Trailer {
	t := Trailer{Outcome: first(md, TrailerOutcome), Refusal: first(md, TrailerRefusal), Limit: first(md, TrailerLimit)}
	req := md.Get(TrailerRequest)
	t.Unread = slices.Contains(req, RequestUnread) && !slices.Contains(req, RequestRead)
	if v := first(md, TrailerLSN); v != "" {
		n, _ := strconv.ParseUint(v, 10, 64)
		t.LSN = lsn.LSN(n)
	}
	return t
}

// MD is t as trailer metadata.
func (t Trailer) MD() metadata.MD {
	md := metadata.MD{}
	set := func(k, v string) {
		if v != "" {
			md.Set(k, v)
		}
	}
	set(TrailerOutcome, t.Outcome)
	if t.LSN != 0 {
		md.Set(TrailerLSN, strconv.FormatUint(uint64(t.LSN), 10))
	}
	set(TrailerRefusal, t.Refusal)
	set(TrailerLimit, t.Limit)
	if t.Unread {
		md.Set(TrailerRequest, RequestUnread)
	}
	return md
}

// SessionStatus is the answer, on a session stream, of a unit that a call
// would have failed with err and trailer md.
func SessionStatus(err error, md metadata.MD) *forwardpb.SessionStatus {
	st := status.Convert(err)
	t := ReadTrailer(md)
	return &forwardpb.SessionStatus{Code: int32(st.Code()), Message: st.Message(),
		Outcome: t.Outcome, CommitLsn: uint64(t.LSN), Refusal: t.Refusal, Limit: t.Limit}
}

// FromSessionStatus is the inverse of SessionStatus: the status and the
// trailer a call would have ended with.
func FromSessionStatus(s *forwardpb.SessionStatus) (*status.Status, Trailer) {
	t := Trailer{Outcome: s.GetOutcome(), LSN: lsn.LSN(s.GetCommitLsn()), Refusal: s.GetRefusal(), Limit: s.GetLimit()}
	return status.New(codes.Code(s.GetCode()), s.GetMessage()), t
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
