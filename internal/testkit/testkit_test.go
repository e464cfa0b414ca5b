package testkit

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	var looks atomic.Int32
	if !Poll(time.Minute, func() bool { return looks.Add(1) == 3 }) {
		t.Fatal("a condition that holds at the third look was not seen")
	}
	if Poll(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported to hold")
	}
}

// server notes where it serves; Serve returns once it is closed.
type server struct {
	closed chan struct{}
	addr   atomic.Value
}

func (s *server) Serve(lis net.Listener) error {
	s.addr.Store(lis.Addr().String())
	<-s.closed
	return nil
}

func (s *server) Close() error {
	close(s.closed)
	return nil
}

func TestServe(t *testing.T) {
	s := &server{closed: make(chan struct{})}
	t.Run("serving", func(t *testing.T) {
		addr := Serve(t, s)
		Eventually(t, time.Minute, func() bool { return s.addr.Load() == addr }, "Serve on %s", addr)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c.Close()
	})
	select {
	case <-s.closed:
	default:
		t.Fatal("the server was not closed when its test ended")
	}
	if c, err := net.Dial("tcp", s.addr.Load().(string)); err == nil {
		c.Close()
		t.Fatal("the listener is still open after its test ended")
	}
}
