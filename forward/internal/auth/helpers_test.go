package auth

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"
)

const (
	testSecret  = testkit.Secret
	otherSecret = "another-secret-that-is-long-enough"
	testProto   = "1"
)

// fakeClock is a settable clock for WithNow.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// protocolUnary and protocolStream check the protocol header after
// authentication, as the executor is expected to.
func protocolUnary(want string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := CheckProtocol(ctx, want); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

func protocolStream(want string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := CheckProtocol(ss.Context(), want); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// startServer runs an in-process gRPC server with the health service behind
// v's interceptors and a protocol check, and returns a dial function.
func startServer(t *testing.T, v *Verifier) func(t *testing.T, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor(), protocolUnary(testProto)),
		grpc.ChainStreamInterceptor(v.StreamServerInterceptor(), protocolStream(testProto)),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	return func(t *testing.T, opts ...grpc.DialOption) healthpb.HealthClient {
		t.Helper()
		opts = append([]grpc.DialOption{
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
		}, opts...)
		conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
}

// captureHeader signs a call of fullMethod the way grpc would, through the
// public GetRequestMetadata path.
func captureHeader(t testing.TB, secret, fullMethod string) string {
	t.Helper()
	creds, err := NewCredentials(secret, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{Method: fullMethod})
	md, err := creds.GetRequestMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return md[AuthHeader]
}

// incoming builds a server-side context carrying the given metadata pairs.
func incoming(kv ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
}
