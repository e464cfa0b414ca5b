package auth

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// BenchmarkVerify measures one successful Verify: metadata lookup, parse,
// window check, one HMAC-SHA256 and a replay-cache insert (plus sweeping).
// Headers are signed before the timer starts, each with a fresh nonce.
//
//   - steady: the clock advances 1ms per call with a 1s window, so the
//     replay cache stays at about a thousand live nonces, as in service.
//   - growing: the clock stands still, so every nonce stays live and the
//     cache grows to b.N entries; the worst case for memory and cache misses.
func BenchmarkVerify(b *testing.B) {
	base := time.Unix(1_700_000_000, 0)
	run := func(b *testing.B, step, window time.Duration) {
		ctxs := make([]context.Context, b.N)
		at := base
		c, err := newCredentials(testSecret, false, func() time.Time { return at }, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		for i := range ctxs {
			at = base.Add(time.Duration(i) * step)
			h, err := c.sign(methodCheck)
			if err != nil {
				b.Fatal(err)
			}
			ctxs[i] = incoming(AuthHeader, h)
		}
		var i int
		v, err := NewVerifier(testSecret, WithWindow(window), WithReplayCacheSize(b.N+1),
			WithNow(func() time.Time { return base.Add(time.Duration(i) * step) }))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i = 0; i < b.N; i++ {
			if err := v.Verify(ctxs[i], methodCheck); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(v.replay.len()), "live-nonces")
	}
	b.Run("steady", func(b *testing.B) { run(b, time.Millisecond, time.Second) })
	b.Run("growing", func(b *testing.B) { run(b, 0, DefaultWindow) })
}

// BenchmarkSign measures the client side: nonce, HMAC and formatting.
func BenchmarkSign(b *testing.B) {
	c, err := newCredentials(testSecret, false, time.Now, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.sign(methodCheck); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshake measures one mutual TLS 1.3 handshake between a
// client and a server keyed from the same secret ("accepted"), and one with
// a client of another secret, which the server refuses on its ClientHello
// ("refused"): what each new connection to an executor costs the two CPUs
// together, both ends in this process over an in-memory pipe.
func BenchmarkHandshake(b *testing.B) {
	k, err := NewKeyring(testSecret)
	if err != nil {
		b.Fatal(err)
	}
	other, err := NewKeyring(otherSecret)
	if err != nil {
		b.Fatal(err)
	}
	server := k.ServerConfig()
	for _, tc := range []struct {
		name   string
		client *tls.Config
		ok     bool
	}{{"accepted", k.ClientConfig(), true}, {"refused", other.ClientConfig(), false}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c1, c2 := net.Pipe()
				errs := make(chan error, 1)
				go func() { errs <- tls.Server(c1, server).Handshake() }()
				cli := tls.Client(c2, tc.client)
				if err := cli.Handshake(); (err == nil) != tc.ok {
					b.Fatal(err)
				}
				if err := <-errs; (err == nil) != tc.ok {
					b.Fatal(err)
				}
				c1.Close()
				c2.Close()
			}
		})
	}
}
