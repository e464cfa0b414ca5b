package integration

import (
	"context"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/forwardpb"
)

// The executor authenticates every call with a header signed with the
// shared secret, built by forward's internal auth package, which this
// package cannot import. To send what a real client never would (garbage
// messages, replayed headers, another protocol version) with valid
// credentials, a credMinter lets a real forward.Client sign calls to a
// server that only records the header: a header no executor has seen,
// bound to the method the client called, usable once on a real executor.

// authHeader and protocolHeader are the metadata keys of forward's
// authentication and protocol version.
const (
	authHeader     = "authorization"
	protocolHeader = "flypg-protocol"
)

// credMinter records the authorization header of every call it receives.
type credMinter struct {
	t      *testing.T
	srv    *grpc.Server
	client *forward.Client

	mu      sync.Mutex
	headers map[string][]string // by full method name
}

func newCredMinter(t *testing.T, secret string) *credMinter {
	t.Helper()
	m := &credMinter{t: t, headers: map[string][]string{}}
	m.srv = grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		md, _ := metadata.FromIncomingContext(stream.Context())
		if h := md.Get(authHeader); len(h) > 0 {
			m.mu.Lock()
			m.headers[method] = append(m.headers[method], h[0])
			m.mu.Unlock()
		}
		return status.Error(codes.Unimplemented, "credential minter")
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go m.srv.Serve(lis)
	t.Cleanup(m.srv.Stop)
	if m.client, err = forward.NewClient(forward.ClientConfig{Target: lis.Addr().String(), Secret: secret, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.client.Close() })
	return m
}

// header returns a fresh authorization header for method (a full method
// name of the flypg.forward.v1.Executor service).
func (m *credMinter) header(method string) string {
	m.t.Helper()
	m.mu.Lock()
	before := len(m.headers[method])
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch method {
	case forwardpb.Executor_Exec_FullMethodName:
		db := m.client.OpenDB()
		db.ExecContext(ctx, "SELECT 1")
		db.Close()
	case forwardpb.Executor_Tx_FullMethodName:
		db := m.client.OpenDB()
		if tx, err := db.BeginTx(ctx, nil); err == nil {
			tx.ExecContext(ctx, "SELECT 1")
			tx.Rollback()
		}
		db.Close()
	case forwardpb.Executor_Call_FullMethodName:
		m.client.Call(ctx, "mint", nil)
	case forwardpb.Executor_Resolve_FullMethodName:
		m.client.Resolve(ctx, hex.EncodeToString(make([]byte, 16)))
	default:
		m.t.Fatalf("credMinter: no way to call %s", method)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := m.headers[method]
	if len(hs) == before {
		m.t.Fatalf("credMinter: the client sent no authorization header for %s", method)
	}
	return hs[len(hs)-1]
}

// rawExecutor is a gRPC connection to an executor without credentials:
// each call carries the metadata its test chooses.
type rawExecutor struct {
	cc  *grpc.ClientConn
	api forwardpb.ExecutorClient
}

func newRawExecutor(t *testing.T, addr string) *rawExecutor {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &rawExecutor{cc: cc, api: forwardpb.NewExecutorClient(cc)}
}

// callCtx is a context carrying an authorization header (if not empty) and
// a protocol version (if not empty).
func callCtx(ctx context.Context, header, protocol string) context.Context {
	var kv []string
	if header != "" {
		kv = append(kv, authHeader, header)
	}
	if protocol != "" {
		kv = append(kv, protocolHeader, protocol)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
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
