package forward

import (
	"context"
	"encoding/hex"
	"errors"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// CallError is a registered function's failure, reported by the executor;
// see protocol.CallError.
type CallError = protocol.CallError

// Call runs the function registered on the executor as name with payload,
// with the same exactly-once retries as a statement. It returns the
// function's output and the commit LSN, and records the commit in ctx's
// Receipt. A function that failed returns a *CallError; an unregistered
// name an *Error matching ErrUnknownFunction.
func (c *Client) Call(ctx context.Context, name string, payload []byte) ([]byte, lsn.LSN, error) {
	ctx, cancel := c.unitContext(ctx)
	defer cancel()
	rcpt := ReceiptFrom(ctx)
	id := newID()
	var resp *forwardpb.CallResponse
	if !utf8.ValidString(name) {
		return nil, 0, &Error{Op: "call", Target: c.cfg.Target, RequestID: hex.EncodeToString(id), Kind: ErrUnknownFunction, Err: errors.New("the function name is not valid UTF-8; nothing was sent")}
	}
	err := c.do(ctx, "call", id, rcpt, func(ctx context.Context, u *forwardpb.Unit, md *metadata.MD) (connID, error) {
		req := &forwardpb.CallRequest{Unit: u, Name: name, Payload: payload}
		if err := c.checkSend(req); err != nil {
			return "", err
		}
		var err error
		var p peer.Peer
		resp, err = c.api.Call(ctx, req, grpc.Trailer(md), grpc.Peer(&p))
		if err == nil {
			c.inst.note(connOf(&p), resp.GetInstance())
		}
		return connOf(&p), err
	})
	if err != nil {
		return nil, 0, err
	}
	if ce := resp.GetError(); ce != nil {
		if ce.GetUnknownFunction() {
			return nil, 0, &Error{Op: "call", Target: c.cfg.Target, RequestID: hex.EncodeToString(id), Kind: ErrUnknownFunction, Err: errors.New(ce.GetMessage())}
		}
		cerr := &CallError{Name: name, Code: ce.GetCode(), Message: ce.GetMessage()}
		if pe := ce.GetPgError(); pe != nil {
			cerr.Err = wire.PgErrorFromProto(pe)
		}
		return nil, 0, cerr
	}
	commitLSN := lsn.LSN(resp.GetCommitLsn())
	rcpt.commit(commitLSN)
	return resp.GetPayload(), commitLSN, nil
}
