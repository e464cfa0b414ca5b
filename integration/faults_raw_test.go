package integration

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/internal/testkit"
)

// protocolHeader is the metadata key naming the forwarding protocol
// version.
const protocolHeader = "flypg-protocol"

// rawExecutor is a gRPC connection to an executor with the transport of a
// client holding the test secret, without forward's client: each call
// carries the metadata and messages its test chooses, including what a
// real client never would.
type rawExecutor struct {
	cc  *grpc.ClientConn
	api forwardpb.ExecutorClient
}

func newRawExecutor(t *testing.T, addr string) *rawExecutor {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(secretCredentials(t, testkit.Secret)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &rawExecutor{cc: cc, api: forwardpb.NewExecutorClient(cc)}
}

// secretCredentials are the transport credentials of a client holding
// secret.
func secretCredentials(t testing.TB, secret string) credentials.TransportCredentials {
	t.Helper()
	tc, err := forward.TransportCredentials(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// callCtx is a context carrying a protocol version (if not empty).
func callCtx(ctx context.Context, protocol string) context.Context {
	if protocol == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, protocolHeader, protocol)
}

// rawBytes is a codec that sends and receives messages as they are, so
// that a test can send bytes that are not a valid message.
type rawBytes struct{}

func (rawBytes) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawBytes) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawBytes) Name() string { return "proto" }
