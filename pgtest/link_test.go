package pgtest

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
)

// echoServer echoes every connection until the client closes it. It stops,
// closing its connections, at the end of the test.
func echoServer(t *testing.T) string {
	t.Helper()
	ln := testkit.Listen(t)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads the echo, returning how long it took.
func roundTrip(c net.Conn, msg string) (time.Duration, error) {
	begin := time.Now()
	if err := c.SetDeadline(begin.Add(2 * time.Second)); err != nil {
		return 0, err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0, err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	if string(buf) != msg {
		return 0, errors.New("echo mismatch: " + string(buf))
	}
	return time.Since(begin), nil
}

func mustRoundTrip(t *testing.T, c net.Conn, msg string) time.Duration {
	t.Helper()
	d, err := roundTrip(c, msg)
	if err != nil {
		t.Fatalf("round trip %q: %v", msg, err)
	}
	return d
}

func TestLink(t *testing.T) {
	upstream := echoServer(t)
	l, err := NewLink("echo", upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if l.Upstream() != upstream || l.Name() != "echo" {
		t.Errorf("Name/Upstream = %q/%q", l.Name(), l.Upstream())
	}

	c := dialT(t, l.Addr())
	mustRoundTrip(t, c, "hello")

	t.Run("RTT", func(t *testing.T) {
		if err := l.SetRTT(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d := mustRoundTrip(t, c, "slow"); d < 95*time.Millisecond {
			t.Errorf("round trip with RTT 100ms took %s", d)
		}
		// Replacing the value, on a new connection too.
		if err := l.SetRTT(40 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d := mustRoundTrip(t, dialT(t, l.Addr()), "medium"); d < 38*time.Millisecond || d > 95*time.Millisecond {
			t.Errorf("round trip with RTT 40ms took %s", d)
		}
		if err := l.SetRTT(0); err != nil {
			t.Fatal(err)
		}
		if d := mustRoundTrip(t, c, "fast"); d > 35*time.Millisecond {
			t.Errorf("round trip without RTT took %s", d)
		}
	})

	t.Run("CutRestore", func(t *testing.T) {
		old := dialT(t, l.Addr())
		mustRoundTrip(t, old, "before")
		if err := l.Cut(); err != nil {
			t.Fatal(err)
		}
		if _, err := roundTrip(old, "during"); err == nil {
			t.Error("open connection still works after Cut")
		}
		if _, err := net.DialTimeout("tcp", l.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial after Cut: %v, want connection refused", err)
		}
		if err := l.Restore(); err != nil {
			t.Fatal(err)
		}
		if err := l.Restore(); err != nil {
			t.Errorf("second Restore: %v", err)
		}
		mustRoundTrip(t, dialT(t, l.Addr()), "after")
	})

	t.Run("ResetPeer", func(t *testing.T) {
		old := dialT(t, l.Addr())
		mustRoundTrip(t, old, "before")
		if err := l.ResetPeer(); err != nil {
			t.Fatal(err)
		}
		if err := l.ResetPeer(); err != nil {
			t.Fatalf("second ResetPeer: %v", err)
		}
		if _, err := roundTrip(old, "old"); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Errorf("open connection after ResetPeer: %v, want connection reset", err)
		}
		// The RST may arrive before the dial completes, or after.
		c, err := net.DialTimeout("tcp", l.Addr(), time.Second)
		if err == nil {
			_, err = roundTrip(c, "new")
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("new connection after ResetPeer: %v, want connection reset", err)
		}
		if err := l.Clear(); err != nil {
			t.Fatal(err)
		}
		mustRoundTrip(t, dialT(t, l.Addr()), "cleared")
	})

	t.Run("Blackhole", func(t *testing.T) {
		old := dialT(t, l.Addr())
		if err := l.Blackhole(); err != nil {
			t.Fatal(err)
		}
		if err := old.SetDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := old.Write([]byte("void")); err != nil {
			t.Fatalf("write into black hole: %v", err)
		}
		var ne net.Error
		if _, err := old.Read(make([]byte, 4)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("read through black hole: %v, want timeout", err)
		}
		if err := l.Clear(); err != nil {
			t.Fatal(err)
		}
		mustRoundTrip(t, dialT(t, l.Addr()), "cleared")
	})

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", l.Addr(), time.Second); err == nil {
		t.Error("dial after Close succeeded")
	}
	if err := l.SetRTT(time.Millisecond); err == nil {
		t.Error("SetRTT after Close succeeded")
	}
	if err := l.Restore(); err == nil {
		t.Error("Restore after Close succeeded")
	}
}

// TestLinkDrainsInFlightData closes connections while toxics hold data:
// toxiproxy's own proxy strands goroutines then, which TestMain's leak
// check would report.
func TestLinkDrainsInFlightData(t *testing.T) {
	l, err := NewLink("drain", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	write := func(c net.Conn) {
		t.Helper()
		if _, err := c.Write([]byte("in flight")); err != nil {
			t.Fatal(err)
		}
	}

	if err := l.SetRTT(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	write(dialT(t, l.Addr()))
	if err := l.Cut(); err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(); err != nil {
		t.Fatal(err)
	}

	c := dialT(t, l.Addr())
	write(c)
	if err := l.Blackhole(); err != nil {
		t.Fatal(err)
	}
	write(c)
	if err := l.Clear(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(c, "after clear"); err == nil {
		t.Error("black-holed connection still works after Clear")
	}

	if err := l.SetRTT(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	write(dialT(t, l.Addr()))
	if err := l.ResetPeer(); err != nil {
		t.Fatal(err)
	}
	if err := l.Clear(); err != nil {
		t.Fatal(err)
	}
	write(dialT(t, l.Addr()))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
