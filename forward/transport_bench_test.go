package forward_test

import (
	"context"
	"net"
	"testing"

	"github.com/flypg/flypg/forward"
)

// BenchmarkTransport measures what the transport costs a forwarded unit:
// a Call of a function that does nothing, through a real client and
// executor on loopback, with TLS keyed from the secret ("tls") and in
// plaintext ("plaintext", an executor without a secret). No database is
// involved, so the difference is the transport's. "serial" is one call at
// a time (latency), "parallel" as many as the benchmark's goroutines
// (throughput, both ends on the same CPUs).
func BenchmarkTransport(b *testing.B) {
	for _, mode := range []string{"plaintext", "tls"} {
		b.Run(mode, func(b *testing.B) {
			xc := forward.ExecutorConfig{Calls: calls{}, AllowUnauthenticated: true}
			cc := forward.ClientConfig{}
			if mode == "tls" {
				xc.Secret, cc.Secret = secret, secret
			}
			x, err := forward.NewExecutor(context.Background(), xc)
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close()
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go x.Serve(lis)
			cc.Target = lis.Addr().String()
			c, err := forward.NewClient(cc)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			call := func() {
				if _, _, err := c.Call(context.Background(), "echo", []byte("x")); err != nil {
					b.Fatal(err)
				}
			}
			call()
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					call()
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						call()
					}
				})
			})
		})
	}
}
