package forward

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/protocol"
)

// failure turns a failed attempt into a final error, or nil when the
// attempt should be repeated (the request may have been sent and the
// executor may remember it). It decides from the status code and the
// typed facts the executor sent with it (the unit's protocol.Trailer, the
// reason of an ErrorInfo detail), never from a message: messages are for
// people, and gRPC's own are no API.
func (c *Client) failure(op string, id []byte, err error, md metadata.MD) error {
	t := protocol.ReadTrailer(md)
	fail := func(kind error) error {
		return &Error{Op: op, Target: c.cfg.Target, RequestID: hex.EncodeToString(id), Kind: kind, Err: err, Limit: t.Limit}
	}
	if errors.As(err, new(*sendLimitError)) {
		return fail(ErrTooLarge)
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return fail(ErrProtocol)
	}
	switch {
	case t.Refusal == protocol.RefusalBusy, protocol.Reason(err) == protocol.ReasonBusy:
		return fail(ErrBusy)
	case t.Refusal == protocol.RefusalDatabase:
		return fail(ErrDatabaseMismatch)
	}
	switch t.Outcome {
	case protocol.OutcomeNotRun:
		switch st.Code() {
		case codes.ResourceExhausted:
			return fail(ErrTooLarge)
		case codes.FailedPrecondition:
			return fail(ErrNotPrimary)
		case codes.InvalidArgument:
			return fail(ErrProtocol)
		case codes.Unavailable:
			return fail(ErrUnavailable)
		default:
			return fail(ErrTxAborted)
		}
	case protocol.OutcomeUnknown:
		return fail(ErrInDoubt)
	case protocol.OutcomeCommitted:
		return &CommittedError{Op: op, RequestID: hex.EncodeToString(id), LSN: t.LSN, Reason: st.Message()}
	}
	if t.Unread && st.Code() == codes.ResourceExhausted {
		// The executor's gRPC server refused the request for its size
		// before reading it whole.
		t.Limit = "MaxRequestBytes"
		return fail(ErrTooLarge)
	}
	switch st.Code() {
	case codes.Unauthenticated:
		return fail(ErrUnauthenticated)
	case codes.FailedPrecondition, codes.Unimplemented, codes.InvalidArgument:
		return fail(ErrProtocol)
	case codes.ResourceExhausted:
		// The executor types every refusal of its own (above), including
		// its gRPC server's refusal of a request over its receive limit:
		// this is the client's receive limit (or the executor's send
		// limit), and the unit may well have committed.
		return fail(ErrInDoubt)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown, codes.Aborted:
		return nil // may have been sent: repeat with the same ID
	}
	return fail(ErrProtocol)
}

// sendLimitError is a request over ClientConfig.MaxSendBytes, refused
// before it was sent.
type sendLimitError struct{ size, limit int }

func (e *sendLimitError) Error() string {
	return fmt.Sprintf("a request of %d bytes exceeds the client's MaxSendBytes (%d); nothing was sent", e.size, e.limit)
}

// checkSend refuses m, before it is sent, when it is over the client's
// send limit. gRPC, which has the same limit, would refuse it too, but say
// so only in its message; checked here, the client knows that nothing was
// sent.
func (c *Client) checkSend(m proto.Message) error {
	_, err := c.sendSize(m)
	return err
}

// sendSize is checkSend that also returns m's size.
func (c *Client) sendSize(m proto.Message) (int, error) {
	n := proto.Size(m)
	if n > c.cfg.MaxSendBytes {
		return n, notSent{&sendLimitError{size: n, limit: c.cfg.MaxSendBytes}}
	}
	return n, nil
}
