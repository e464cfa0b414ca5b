package flypggrpc_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/flypggrpc"
	"github.com/flypg/flypg/internal/testkit"
)

// TestInterceptors: the caller's bookmark reaches the server's handler,
// and the bookmark of the handler's write comes back into the caller's
// session, for unary calls and streams; a call that wrote nothing returns
// none.
func TestInterceptors(t *testing.T) {
	var seen []string
	writes := true
	// record stands in for the service's handler: it notes the bookmark it
	// runs under, and writes.
	record := func(ctx context.Context) {
		seen = append(seen, flypg.BookmarkFrom(ctx).String())
		if writes {
			callbacks.SessionFrom(ctx).Advance(callbacks.Mark{System: 1, Timeline: 1, LSN: 0x500})
		}
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(flypggrpc.UnaryServerInterceptor(),
			func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				record(ctx)
				return h(ctx, req)
			}),
		grpc.ChainStreamInterceptor(flypggrpc.StreamServerInterceptor(),
			func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				record(ss.Context())
				return h(srv, ss)
			}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	addr := testkit.ServeGRPC(t, srv)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(flypggrpc.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(flypggrpc.StreamClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)

	start, err := flypg.ParseBookmark("1_1.1.100._2.1.7.")
	if err != nil {
		t.Fatal(err)
	}
	ctx := flypg.WithBookmark(context.Background(), start)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if got, want := flypg.BookmarkFrom(ctx).String(), "1_1.1.500._2.1.7."; got != want {
		t.Fatalf("after a unary call that wrote: %q, want %q", got, want)
	}

	// A stream: Watch sends the status, then the server ends it.
	ctx2 := flypg.WithBookmark(context.Background(), start)
	sctx, cancel := context.WithCancel(ctx2)
	stream, err := client.Watch(sctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	hs.Shutdown() // the status changes; the stream goes on until cancelled
	cancel()
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}

	writes = false
	ctx3 := flypg.WithBookmark(context.Background(), flypg.Bookmark{})
	if _, err := client.Check(ctx3, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if !flypg.BookmarkFrom(ctx3).IsZero() {
		t.Fatal("a call that wrote nothing returned a bookmark")
	}
	if len(seen) != 3 || seen[0] != start.String() || seen[1] != start.String() || seen[2] != "" {
		t.Fatalf("the server saw %q", seen)
	}
}
