package forward

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/protocol"
)

// TestFailureIsTyped pins how the client reads each condition the executor
// (or gRPC) reports: from the status code, the unit's trailer and the
// reason of an ErrorInfo detail. Each case also carries a message that
// would have suggested another answer, to show that the text plays no part.
func TestFailureIsTyped(t *testing.T) {
	c := &Client{cfg: ClientConfig{Target: "executor:5480", MaxSendBytes: 100}}
	notRun := protocol.Trailer{Outcome: protocol.OutcomeNotRun}
	for _, tc := range []struct {
		name      string
		err       error
		trailer   protocol.Trailer
		want      error  // the Kind of the *Error, or nil for a retry
		wantLimit string // Error.Limit
	}{
		{"busy: no slot before the deadline", status.Error(codes.ResourceExhausted, "request too large"),
			protocol.Trailer{Outcome: protocol.OutcomeNotRun, Refusal: protocol.RefusalBusy}, ErrBusy, ""},
		{"busy: the authentication's nonce memory is full", protocol.Refusal(codes.ResourceExhausted, protocol.ReasonBusy, "received message larger than max (1 vs. 0)"),
			protocol.Trailer{}, ErrBusy, ""},
		{"another database", status.Error(codes.FailedPrecondition, "busy"),
			protocol.Trailer{Outcome: protocol.OutcomeNotRun, Refusal: protocol.RefusalDatabase}, ErrDatabaseMismatch, ""},
		{"request over MaxRequestBytes", status.Error(codes.ResourceExhausted, "busy"),
			protocol.Trailer{Outcome: protocol.OutcomeNotRun, Limit: "MaxRequestBytes"}, ErrTooLarge, "MaxRequestBytes"},
		{"request over the executor's gRPC receive limit", status.Error(codes.ResourceExhausted, "busy"),
			protocol.Trailer{Unread: true}, ErrTooLarge, "MaxRequestBytes"},
		{"request over the client's send limit", notSent{&sendLimitError{size: 200, limit: 100}},
			protocol.Trailer{}, ErrTooLarge, ""},
		{"reply over the client's receive limit", status.Error(codes.ResourceExhausted, "trying to send message larger than max (9 vs. 1): busy"),
			protocol.Trailer{}, ErrInDoubt, ""},
		{"no primary", status.Error(codes.FailedPrecondition, "busy"), notRun, ErrNotPrimary, ""},
		{"transaction ended by a limit", status.Error(codes.DeadlineExceeded, "busy"),
			protocol.Trailer{Outcome: protocol.OutcomeNotRun, Limit: "TxIdleTimeout"}, ErrTxAborted, "TxIdleTimeout"},
		{"in doubt", status.Error(codes.Unavailable, "not committed"), protocol.Trailer{Outcome: protocol.OutcomeUnknown}, ErrInDoubt, ""},
		{"lost reply", status.Error(codes.Unavailable, "busy"), protocol.Trailer{}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.failure("exec", make([]byte, 16), tc.err, tc.trailer.MD())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("%v, want a retry", err)
				}
				return
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.Kind != tc.want || fe.Limit != tc.wantLimit {
				t.Fatalf("%v, want kind %q and limit %q", err, tc.want, tc.wantLimit)
			}
		})
	}
	// A unit that committed although its answer failed: the trailer
	// carries the commit LSN.
	err := c.failure("exec", make([]byte, 16), status.Error(codes.ResourceExhausted, "busy"),
		protocol.Trailer{Outcome: protocol.OutcomeCommitted, LSN: 0x16B374D848}.MD())
	var ce *CommittedError
	if !errors.As(err, &ce) || ce.LSN != 0x16B374D848 {
		t.Fatalf("%v, want a *CommittedError at 16/B374D848", err)
	}
}

// TestSessionStatusCarriesTheTrailer: a unit answered on a session stream
// reaches the classification with the same trailer a call would have.
func TestSessionStatusCarriesTheTrailer(t *testing.T) {
	want := protocol.Trailer{Outcome: protocol.OutcomeCommitted, LSN: 42, Refusal: protocol.RefusalBusy, Limit: "MaxResponseBytes"}
	st, got := protocol.FromSessionStatus(protocol.SessionStatus(status.Error(codes.AlreadyExists, "x"), want.MD()))
	if st.Code() != codes.AlreadyExists || got != want || protocol.ReadTrailer(got.MD()) != want {
		t.Fatalf("status %v, trailer %+v; want AlreadyExists, %+v", st, got, want)
	}
	if (protocol.Trailer{}).MD().Len() != 0 || protocol.ReadTrailer(metadata.MD{}) != (protocol.Trailer{}) {
		t.Fatal("an empty trailer says something")
	}
}
