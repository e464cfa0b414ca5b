package pgtest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Shopify/toxiproxy/v2/stream"
)

// This file holds the Link's connection handling: the accept loop, and for
// each accepted connection two toxiproxy pipelines (client to upstream and
// back) whose ends Link owns.
//
// Lock order: Link.mu, then Link.startMu, then Link.connMu. The accept
// loop takes only startMu and connMu, so a method holding mu may wait for
// it to stop; pipelines take only connMu, so a method holding startMu may
// wait for them to drain.

// linkConn is one proxied connection: the accepted client side and the
// dialled upstream side.
type linkConn struct {
	client, upstream *net.TCPConn
	pending          atomic.Int32 // pipelines still running, 2 down to 0
}

// serve starts the accept loop on ln. The caller holds mu (or is NewLink).
func (l *Link) serve(ln net.Listener) {
	l.ln = ln
	l.acceptWG.Add(1)
	go func() {
		defer l.acceptWG.Done()
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// Such as running out of file descriptors: back off
				// rather than spin.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.handle(c.(*net.TCPConn))
		}
	}()
}

// stopListening closes the listener, so new connections are refused, and
// waits for the accept loop to end. The caller holds mu.
func (l *Link) stopListening() {
	if l.ln == nil {
		return
	}
	_ = l.ln.Close()
	l.acceptWG.Wait()
	l.ln = nil
}

// handle connects an accepted client to upstream through two pipelines.
func (l *Link) handle(client *net.TCPConn) {
	l.startMu.Lock()
	reset := l.reset
	l.startMu.Unlock()
	if reset {
		resetConn(client)
		return
	}
	conn, err := net.DialTimeout("tcp", l.upstream, 5*time.Second)
	if err != nil {
		// As if the far side refused: the client sees its connection
		// close.
		_ = client.Close()
		return
	}
	up := conn.(*net.TCPConn)

	// startMu makes starting pipelines atomic with respect to ResetPeer and
	// Clear, which must see every connection.
	l.startMu.Lock()
	defer l.startMu.Unlock()
	if l.reset {
		resetConn(client)
		resetConn(up)
		return
	}
	lc := &linkConn{client: client, upstream: up}
	lc.pending.Store(2)
	l.connMu.Lock()
	l.conns[lc] = struct{}{}
	l.connMu.Unlock()

	l.nextID++
	id := strconv.Itoa(l.nextID)
	upIn, downIn := &stampedReader{r: client}, &stampedReader{r: up}
	l.proxy.Toxics.StartLink(l.server, id+"upstream", upIn, newPipeEnd(l, lc, up, upIn), stream.Upstream)
	l.proxy.Toxics.StartLink(l.server, id+"downstream", downIn, newPipeEnd(l, lc, client, downIn), stream.Downstream)
}

// closeConns closes every proxied connection, with an RST if rst, and
// waits until their pipelines have finished. The caller holds mu.
func (l *Link) closeConns(rst bool) error {
	l.startMu.Lock()
	defer l.startMu.Unlock()
	return l.closeConnsLocked(rst)
}

// closeConnsLocked is closeConns for a caller that holds startMu.
func (l *Link) closeConnsLocked(rst bool) error {
	l.connMu.Lock()
	for lc := range l.conns {
		if rst {
			resetConn(lc.client)
			resetConn(lc.upstream)
		} else {
			_ = lc.client.Close()
			_ = lc.upstream.Close()
		}
	}
	l.connMu.Unlock()

	// A pipeline ends once its reader has failed and its toxics have
	// handed on what they hold (at most one latency), so poll briefly.
	deadline := time.Now().Add(drainTimeout)
	for {
		l.connMu.Lock()
		n := len(l.conns)
		l.connMu.Unlock()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: link %s: %d connection(s) did not shut down within %s", l.name, n, drainTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// pipelineDone records that one of lc's pipelines has finished.
func (l *Link) pipelineDone(lc *linkConn) {
	if lc.pending.Add(-1) == 0 {
		l.connMu.Lock()
		delete(l.conns, lc)
		l.connMu.Unlock()
	}
}

// resetConn closes c with a TCP RST instead of a FIN: SO_LINGER 0 discards
// unsent data.
func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// pipeEnd is where a toxiproxy pipeline writes: one side of a linkConn.
// Writes pass through a delay line (delay.go) that adds the link's latency.
type pipeEnd struct {
	l    *Link
	lc   *linkConn
	conn *net.TCPConn

	line *delayLine
	once sync.Once
}

func newPipeEnd(l *Link, lc *linkConn, conn *net.TCPConn, in *stampedReader) *pipeEnd {
	e := &pipeEnd{l: l, lc: lc, conn: conn}
	e.line = startDelayLine(conn, &l.oneWay, in)
	return e
}

// Write reports success even after the connection failed: toxiproxy's
// toxics block forever handing data to a pipeline whose writer has stopped,
// so the pipeline must drain until its reader ends.
func (e *pipeEnd) Write(b []byte) (int, error) {
	e.line.send(b)
	return len(b), nil
}

// Close is called once by the pipeline's writer when the pipeline ends.
func (e *pipeEnd) Close() error {
	e.once.Do(func() {
		// Deliver what the delay line still holds, then close: the
		// opposite pipeline reads from this connection, so closing it ends
		// that pipeline too.
		e.line.close()
		_ = e.conn.Close()
		e.l.pipelineDone(e.lc)
	})
	return nil
}
