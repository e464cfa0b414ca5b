package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
)

// recorder is a TCP proxy that records what each client connection sends,
// as someone on the network path would.
type recorder struct {
	lis    net.Listener
	target string

	mu    sync.Mutex
	conns [][]byte // client-to-server bytes, per connection
	wg    sync.WaitGroup
}

func newRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	lis := testkit.Listen(t)
	r := &recorder{lis: lis, target: target}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() { lis.Close(); r.wg.Wait() })
	return r
}

func (r *recorder) addr() string { return r.lis.Addr().String() }

func (r *recorder) serve() {
	defer r.wg.Done()
	for {
		c, err := r.lis.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		i := len(r.conns)
		r.conns = append(r.conns, nil)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(c, up)
				c.Close()
				close(done)
			}()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					r.mu.Lock()
					r.conns[i] = append(r.conns[i], buf[:n]...)
					r.mu.Unlock()
					up.Write(buf[:n])
				}
				if err != nil {
					break
				}
			}
			up.Close()
			<-done
		}()
	}
}

// recorded returns the bytes each connection sent.
func (r *recorder) recorded() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, len(r.conns))
	for i, b := range r.conns {
		out[i] = append([]byte(nil), b...)
	}
	return out
}

// tlsRecords splits a client's byte stream into its TLS records (5-byte
// header, then the length it announces); the bytes of a stream that is
// not TLS come back as one piece.
func tlsRecords(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 5 {
		n := 5 + (int(b[3])<<8 | int(b[4]))
		if b[0] < 20 || b[0] > 23 || n > len(b) {
			break
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

// send plays bytes to addr as a new connection, reading whatever comes
// back, until the server closes it or a few seconds passed.
func send(addr string, pieces ...[]byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c) // until the server closes or the deadline
		close(drained)
	}()
	for _, p := range pieces {
		if _, err := c.Write(p); err != nil {
			break
		}
	}
	<-drained
}

// TestSecurityRecordedTrafficRunsNothing records the bytes two legitimate
// clients send to a real flypg-executor process (lone statements on
// sessions, and a transaction), then plays them back to the same process,
// to a second instance and to the first instance restarted: verbatim, the
// start of one connection with the rest of another, twice in a row, and
// with a byte of the data changed. Nothing new commits on any of them.
func TestSecurityRecordedTrafficRunsNothing(t *testing.T) {
	t.Parallel()
	d := newSecDB(t)
	bin := buildExecutor(t)
	a := startExecutorProcess(t, bin, d.dsn, "127.0.0.1:0")
	b := startExecutorProcess(t, bin, d.dsn, "127.0.0.1:0")
	rec := newRecorder(t, a.addr)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		func() {
			db := forwarder(t, rec.addr(), testkit.Secret)
			noErr(t, insert(ctx, db, fmt.Sprintf("rec-%d-a", i)))
			noErr(t, insert(ctx, db, fmt.Sprintf("rec-%d-b", i)))
			tx, err := db.BeginTx(ctx, nil)
			noErr(t, err)
			_, err = tx.ExecContext(ctx, `INSERT INTO sec_writes (key) VALUES ($1)`, fmt.Sprintf("rec-%d-tx", i))
			noErr(t, err)
			noErr(t, tx.Commit())
			db.Close()
		}()
	}
	before := d.count(t, "%")
	if before != 6 {
		t.Fatalf("%d rows after the legitimate writes, want 6", before)
	}
	conns := rec.recorded()
	if len(conns) < 2 {
		t.Fatalf("recorded %d connections, want at least 2", len(conns))
	}
	first, second := conns[0], conns[1]
	r1, r2 := tlsRecords(first), tlsRecords(second)
	t.Logf("recorded %d connections; the first sent %d bytes in %d TLS records", len(conns), len(first), len(r1))

	type variant struct {
		name   string
		pieces [][]byte
	}
	variants := []variant{{"verbatim", [][]byte{first}}, {"verbatim, second connection", [][]byte{second}}, {"twice", [][]byte{first, first}}}
	for k := 1; k < min(len(r1), len(r2), 6); k++ {
		// The first k records of one connection (its handshake and
		// whatever followed) with the rest of the other.
		var spliced [][]byte
		spliced = append(spliced, r1[:k]...)
		spliced = append(spliced, r2[k:]...)
		variants = append(variants, variant{fmt.Sprintf("first %d records of one, rest of the other", k), spliced})
	}
	tampered := append([]byte(nil), first...)
	tampered[len(tampered)-8] ^= 0x55
	variants = append(variants, variant{"a byte changed", [][]byte{tampered}})

	replayAll := func(target string) {
		var wg sync.WaitGroup
		for _, v := range variants {
			wg.Add(1)
			go func() {
				defer wg.Done()
				send(target, v.pieces...)
			}()
		}
		wg.Wait()
	}
	check := func(what string) {
		t.Helper()
		if n := d.count(t, "%"); n != before {
			t.Fatalf("recorded bytes played to %s: %d rows, want %d", what, n, before)
		}
	}
	replayAll(a.addr)
	check("the same instance")
	replayAll(b.addr)
	check("a second instance")
	a.Kill(t)
	a2 := startExecutorProcess(t, bin, d.dsn, a.addr)
	replayAll(a2.addr)
	check("the restarted instance")

	// Each instance still serves its clients.
	for _, p := range []*executorProcess{a2, b} {
		if err := insert(ctx, forwarder(t, p.addr, testkit.Secret), "after-replay"); err != nil {
			t.Fatalf("legitimate write after the replays: %v", err)
		}
	}
	if n := d.count(t, "after-replay"); n != 2 {
		t.Fatalf("%d legitimate writes after the replays, want 2", n)
	}
}
