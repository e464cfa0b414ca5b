package pgtest

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// A delayLine writes chunks to a connection a fixed latency after they
// arrived, in order, like a long cable. It sleeps with nanosleep on its own
// OS thread rather than with a Go timer: Go timers on an idle process wake
// up to a millisecond late, which would make a simulated 10 ms round trip
// 11 ms and blur every latency benchmark run over a Link.
type delayLine struct {
	conn    *net.TCPConn
	latency *atomic.Int64 // nanoseconds, read per chunk
	queue   chan chunk
	done    chan struct{}
	failed  bool // only touched by the line's goroutine
}

type chunk struct {
	data []byte
	due  time.Time
}

// lineDepth bounds the chunks in flight on one direction of a connection;
// a full line blocks the sender, as a full socket buffer would.
const lineDepth = 1024

func startDelayLine(conn *net.TCPConn, latency *atomic.Int64) *delayLine {
	d := &delayLine{conn: conn, latency: latency, queue: make(chan chunk, lineDepth), done: make(chan struct{})}
	go d.run()
	return d
}

// send queues a copy of b (the caller reuses its buffer).
func (d *delayLine) send(b []byte) {
	c := chunk{data: append([]byte(nil), b...)}
	if l := d.latency.Load(); l > 0 {
		c.due = time.Now().Add(time.Duration(l))
	}
	d.queue <- c
}

// close delivers what is queued and stops the line's goroutine.
func (d *delayLine) close() {
	close(d.queue)
	<-d.done
}

func (d *delayLine) run() {
	defer close(d.done)
	for c := range d.queue {
		if !c.due.IsZero() {
			sleepUntil(c.due)
		}
		if d.failed {
			continue // drain: see pipeEnd.Write
		}
		if _, err := d.conn.Write(c.data); err != nil {
			d.failed = true
			// Closing makes the opposite pipeline's reader fail, so both
			// directions wind down.
			_ = d.conn.Close()
		}
	}
}

// sleepUntil blocks the calling goroutine's thread until t with
// nanosleep, which the kernel times to tens of microseconds.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(d.Nanoseconds())
		if err := syscall.Nanosleep(&ts, nil); err == nil {
			return
		}
		// EINTR: sleep the rest.
	}
}
