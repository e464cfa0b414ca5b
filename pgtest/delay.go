package pgtest

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A delayLine writes chunks to a connection a fixed latency after they
// were read from the other side, in order, like a long cable. It counts the
// latency from the moment the bytes were read (a stampedReader records it),
// so the hand-offs between toxiproxy's pipeline goroutines overlap the
// delay instead of adding to it; toxiproxy's own latency toxic starts its
// timer after them and adds up to a millisecond per round trip.
type delayLine struct {
	conn    *net.TCPConn
	latency *atomic.Int64 // nanoseconds, read per chunk
	in      *stampedReader
	seen    uint64 // bytes received by send so far; only touched by send
	queue   chan chunk
	done    chan struct{}
	failed  bool          // only touched by the line's goroutine
	timer   *preciseTimer // only touched by the line's goroutine; nil: Go timers
}

type chunk struct {
	data []byte
	due  time.Time
}

// maxLateness bounds the wake-up lateness the line compensates for; later
// wake-ups (a busy machine) are not the usual case and are not learned.
const maxLateness = time.Millisecond

// lineDepth bounds the chunks in flight on one direction of a connection;
// a full line blocks the sender, as a full socket buffer would.
const lineDepth = 1024

func startDelayLine(conn *net.TCPConn, latency *atomic.Int64, in *stampedReader) *delayLine {
	d := &delayLine{conn: conn, latency: latency, in: in, queue: make(chan chunk, lineDepth), done: make(chan struct{})}
	d.timer, _ = newPreciseTimer() // without one, Go timers are only less precise
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
	defer d.timer.close()
	var late time.Duration // moving average of how late wake-ups come
	for c := range d.queue {
		if !c.due.IsZero() {
			// Wake early by the usual lateness, so that the simulated
			// latency is the nominal one on average rather than the
			// nominal one plus this process's own wake-up time, which a
			// real network does not add.
			d.timer.sleepUntil(c.due.Add(-late))
			if lag := time.Since(c.due) + late; lag > 0 && lag < maxLateness {
				late += (lag - late) / 8
			} else if lag <= 0 {
				late -= late / 8
			}
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

// A preciseTimer sleeps on a timerfd read through Go's network poller: the
// kernel wakes it within tens of microseconds, and while it sleeps it
// holds no scheduler slot. (A Go timer on an idle process wakes up to a
// millisecond late, which would make a simulated 10 ms round trip 11 ms; a
// blocking nanosleep is precise but keeps its slot, and two links sleeping
// at once on a two-core machine would stall every other goroutine.)
type preciseTimer struct {
	f  *os.File
	fd int
}

func newPreciseTimer() (*preciseTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking descriptor makes os.NewFile use the poller.
	return &preciseTimer{f: os.NewFile(uintptr(fd), "timerfd"), fd: fd}, nil
}

// sleepUntil returns at t, or at once if t has passed. Without a timer (the
// kernel refused one) it falls back to a Go timer.
func (p *preciseTimer) sleepUntil(t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	if p == nil {
		time.Sleep(d)
		return
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	if err := unix.TimerfdSettime(p.fd, 0, &spec, nil); err != nil {
		time.Sleep(d)
		return
	}
	var buf [8]byte
	if _, err := p.f.Read(buf[:]); err != nil {
		time.Sleep(time.Until(t))
	}
}

func (p *preciseTimer) close() {
	if p != nil {
		p.f.Close()
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
