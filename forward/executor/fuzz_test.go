package executor

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/auth"
	"github.com/flypg/flypg/forward/protocol"
)

// FuzzExecRequest feeds arbitrary bytes to the executor's request decoding
// and validation (the part that runs before any SQL): it must reject
// malformed requests with an error, never panic, and stay usable.
func FuzzExecRequest(f *testing.F) {
	seed := func(m proto.Message) {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	seed(&forwardpb.ExecRequest{Unit: &forwardpb.Unit{RequestId: make([]byte, 16), Attempt: 1}, Statement: &forwardpb.Statement{Sql: "SELECT $1", Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Int64{Int64: 7}}}}})
	seed(&forwardpb.ExecRequest{Unit: &forwardpb.Unit{RequestId: []byte{1}, Attempt: 9, Instance: "x"}})
	seed(&forwardpb.ExecRequest{Statement: &forwardpb.Statement{Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: forwardpb.Array_KIND_ARRAY}}}}}})
	f.Add([]byte{0xff, 0x01, 0x02})

	x, err := New(context.Background(), Config{AllowUnauthenticated: true, DedupMaxBytes: 64 * (entryOverhead + 16)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { x.Close() })
	svc := &service{x: x}
	// A loopback caller, which an executor without a secret serves.
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(auth.ProtocolHeader, protocol.Version))

	f.Fuzz(func(t *testing.T, b []byte) {
		var req forwardpb.ExecRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return
		}
		// Decoding the arguments is what the executor does first with a
		// statement.
		decodeArgs(req.GetStatement().GetArgs())
		// The handler without a primary: validation and the ledger run,
		// then it answers that this node does not forward SQL.
		resp, err := svc.Exec(ctx, &req)
		if err == nil && resp.GetError() == nil {
			t.Fatalf("a request reached a primary that does not exist: %v", resp)
		}
		if status.Code(err) == codes.Unauthenticated {
			t.Fatalf("a loopback caller was refused: %v", err)
		}
		var tx forwardpb.TxRequest
		if proto.Unmarshal(b, &tx) == nil {
			if b := tx.GetBegin(); b != nil {
				beginSQL(b.GetIsolation(), b.GetReadOnly(), b.GetDeferrable())
			}
		}
	})
}
