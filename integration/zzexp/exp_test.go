package zzexp

import (
	"context"
	"net"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/flypg/flypg/pgtest"
)

func TestGRPCLink(t *testing.T) {
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	defer s.Stop()
	l, _ := pgtest.NewLink("x", lis.Addr().String())
	defer l.Close()
	for _, rtt := range []time.Duration{0, 10 * time.Millisecond} {
		l.SetRTT(rtt)
		cc, _ := grpc.NewClient(l.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		h := healthpb.NewHealthClient(cc)
		h.Check(context.Background(), &healthpb.HealthCheckRequest{})
		var xs []time.Duration
		for i := 0; i < 100; i++ {
			t0 := time.Now()
			h.Check(context.Background(), &healthpb.HealthCheckRequest{})
			xs = append(xs, time.Since(t0))
		}
		sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
		t.Logf("rtt %v: p50 %v p90 %v", rtt, xs[50], xs[90])
		cc.Close()
	}
}
