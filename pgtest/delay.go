package pgtest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A delayLine writes chunks to a connection a fixed latency after they
// were read from the other side, in order, like a long cable. Two things
// keep it on time. It sleeps with nanosleep, blocking its thread, rather
// than with a Go timer: Go timers on an idle process wake up to a
// millisecond late, which would make a simulated 10 ms round trip 11 ms and
// blur every latency benchmark run over a Link. And it counts the latency
// from the moment the bytes were read (a stampedReader records it), so the
// hand-offs between toxiproxy's pipeline goroutines overlap the delay
// instead of adding to it.
type delayLine struct {
	conn    *net.TCPConn
	latency *atomic.Int64 // nanoseconds, read per chunk
	in      *stampedReader
	seen    uint64 // bytes received by send so far; only touched by send
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

func startDelayLine(conn *net.TCPConn, latency *atomic.Int64, in *stampedReader) *delayLine {
	d := &delayLine{conn: conn, latency: latency, in: in, queue: make(chan chunk, lineDepth), done: make(chan struct{})}
	go d.run()
	return d
}

// send queues a copy of b (the caller reuses its buffer).
func (d *delayLine) send(b []byte) {
	c := chunk{data: append([]byte(nil), b...)}
	arrived := d.in.arrival(d.seen+1, d.seen+uint64(len(b)))
	d.seen += uint64(len(b))
	if l := d.latency.Load(); l > 0 {
		c.due = arrived.Add(time.Duration(l))
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

// stampedReader records when each read from a connection returned, so that
// the delay line can count latency from then.
type stampedReader struct {
	r     io.Reader
	mu    sync.Mutex
	total uint64  // bytes read so far
	marks []stamp // reads whose bytes the delay line has not passed yet
}

type stamp struct {
	end uint64 // total after the read
	at  time.Time
}

func (s *stampedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		now := time.Now()
		s.mu.Lock()
		s.total += uint64(n)
		s.marks = append(s.marks, stamp{end: s.total, at: now})
		s.mu.Unlock()
	}
	return n, err
}

// arrival returns when byte first (1-based) was read, and forgets the reads
// that ended by byte last. Bytes a toxic dropped are never asked for, so an
// unknown byte falls back to now.
func (s *stampedReader) arrival(first, last uint64) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := time.Time{}
	for _, m := range s.marks {
		if m.end >= first {
			at = m.at
			break
		}
	}
	n := 0
	for n < len(s.marks) && s.marks[n].end <= last {
		n++
	}
	s.marks = s.marks[n:]
	if at.IsZero() {
		return time.Now()
	}
	return at
}
