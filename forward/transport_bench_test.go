package forward_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/internal/testkit"
)

// BenchmarkTransport measures what the transport costs a forwarded unit:
// a Call of a function that does nothing, through a real client and
// executor on loopback, with TLS keyed from the secret ("tls") and in
// plaintext ("plaintext", an executor without a secret). No database is
// involved, so the difference is the transport's. "serial" is one call at
// a time (latency), "parallel" as many as the benchmark's goroutines
// (throughput, both ends on the same CPUs). cpu-us/op is the CPU time the
// process (client and executor together) spent per call, which other
// load on the machine disturbs less than the time per call.
func BenchmarkTransport(b *testing.B) {
	for _, mode := range []string{"plaintext", "tls"} {
		b.Run(mode, func(b *testing.B) {
			xc := executor.Config{Calls: calls{}, AllowUnauthenticated: true}
			cc := forward.ClientConfig{}
			if mode == "tls" {
				xc.Secret, cc.Secret = testkit.Secret, testkit.Secret
			}
			_, cc.Target = serveExecutor(b, xc)
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
				defer reportCPU(b)()
				for b.Loop() {
					call()
				}
			})
			b.Run("parallel", func(b *testing.B) {
				defer reportCPU(b)()
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

// reportCPU reports the process's CPU time per operation from now until
// the returned function runs.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() { b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-us/op") }
}

// BenchmarkForwardedInsert runs forwarded INSERTs from 64 goroutines
// through the driver (lone statements on sessions) to an executor on a
// real primary, with TLS keyed from the secret and in plaintext. Profile
// it (-cpuprofile) to see what the transport's cryptography costs.
func BenchmarkForwardedInsert(b *testing.B) {
	for _, mode := range []string{"plaintext", "tls"} {
		b.Run(mode, func(b *testing.B) {
			e := startEnv(b, func(x *executor.Config, c *forward.ClientConfig) {
				if mode == "plaintext" {
					x.Secret, c.Secret, x.AllowUnauthenticated = "", "", true
				}
			})
			e.db.SetMaxOpenConns(64)
			e.db.SetMaxIdleConns(64)
			b.SetParallelism(32)
			b.ResetTimer()
			defer reportCPU(b)()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.db.Exec(`INSERT INTO items (name) VALUES (gen_random_uuid()::text)`); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
