package testkit

import (
	"net"
	"testing"
	"time"
)

// Secret is the shared secret of the nodes a test starts: long enough for
// every check of a secret's length.
const Secret = "flypg-test-secret-0123456789abcdef"

// Listen returns a listener on a free loopback port, closed when the test
// ends (closing it again is harmless).
func Listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

// FreePort returns a TCP port of 127.0.0.1 that is free right now, for a
// process the test starts that must be told its port. Another process
// may take it before that one does; prefer Listen where a listener can be
// handed over.
func FreePort(t testing.TB) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// Server serves on a listener until it is closed: an executor, or a
// flypg plugin.
type Server interface {
	Serve(net.Listener) error
	Close() error
}

// Serve serves s on a free loopback port until the test ends, then closes
// s and checks that Serve returned nil. It returns the address.
func Serve(t testing.TB, s Server) string {
	t.Helper()
	lis := Listen(t)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// GRPCServer is a *grpc.Server, or anything that serves and stops as one.
type GRPCServer interface {
	Serve(net.Listener) error
	Stop()
}

// ServeGRPC serves s on a free loopback port until the test ends, then
// stops it and checks that Serve returned nil. It returns the address.
func ServeGRPC(t testing.TB, s GRPCServer) string {
	t.Helper()
	return Serve(t, stopping{s})
}

// stopping closes a GRPCServer by stopping it.
type stopping struct{ GRPCServer }

func (s stopping) Close() error {
	s.Stop()
	return nil
}

// Poll reports whether cond holds within timeout. It asks at once, then
// again after a pause that starts at a millisecond and doubles up to
// maxPause, so that a condition met soon is seen soon and one met late
// costs few looks. It does not fail the test, so goroutines may use it;
// cond runs on the caller's goroutine.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause) // a pause between looks, not a synchronisation
		pause = min(2*pause, maxPause)
	}
	return true
}

// maxPause bounds Poll's pause between looks: short enough for a test
// that acts on a condition while something else is still on its way (a
// reply over a link of 100 ms or more).
const maxPause = 10 * time.Millisecond

// Eventually fails the test unless cond holds within timeout (see Poll);
// the message says what was awaited. Call it from the test's goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for "+format, append([]any{timeout}, args...)...)
	}
}
