package pgtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Link is a TCP proxy on 127.0.0.1 in front of an upstream address that
// simulates the network between two regions: round-trip time, cuts, black
// holes and resets. Its data flows through toxiproxy's toxic pipelines, run
// in-process (no toxiproxy server or HTTP API). Its methods are safe for
// concurrent use.
//
// Link accepts connections itself rather than through toxiproxy.Proxy:
// toxiproxy leaves goroutines blocked forever when a connection closes
// while a latency toxic still holds data, and can reset only connections
// accepted after the reset began. Owning the connections avoids both.
type Link struct {
	name     string
	upstream string
	addr     string // fixed at creation: Restore listens on it again
	server   *toxiproxy.ApiServer
	// proxy is never started; it owns the toxic collection, and
	// toxiproxy's pipelines report finished connections to it.
	proxy *toxiproxy.Proxy

	// mu serialises the methods; see linkconn.go for the lock order.
	mu       sync.Mutex
	ln       net.Listener // nil while cut or closed; guarded by mu
	acceptWG sync.WaitGroup
	closed   bool // guarded by mu

	startMu sync.Mutex // held while pipelines start
	reset   bool       // ResetPeer is in force; guarded by startMu
	nextID  int        // names pipelines; guarded by startMu

	connMu sync.Mutex
	conns  map[*linkConn]struct{} // connections whose pipelines still run

	// oneWay is the latency added in each direction, in nanoseconds. It is
	// applied by the pipelines' ends (see delay.go), not by a toxiproxy
	// latency toxic, whose timers overshoot by up to a millisecond.
	oneWay atomic.Int64
}

// Toxic names; toxiproxy identifies toxics by name within a collection.
const (
	toxicBlackhole = "pgtest_blackhole"
)

// drainTimeout bounds how long Cut, ResetPeer, Clear and Close wait for
// the pipelines of the connections they closed to finish.
const drainTimeout = 10 * time.Second

// NewLink starts a link listening on a free port of 127.0.0.1 that forwards
// every connection to upstream ("host:port"). Close it when done.
func NewLink(name, upstream string) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pgtest: link %s: listen: %w", name, err)
	}
	// toxiproxy needs an ApiServer only for its logger and metrics
	// settings; it is never started. zerolog.Nop keeps toxiproxy's
	// per-connection logging out of test output.
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	l := &Link{
		name:     name,
		upstream: upstream,
		addr:     ln.Addr().String(),
		server:   server,
		proxy:    toxiproxy.NewProxy(server, name, ln.Addr().String(), upstream),
		conns:    make(map[*linkConn]struct{}),
	}
	l.serve(ln)
	return l, nil
}

// Name returns the name given to NewLink.
func (l *Link) Name() string { return l.name }

// Addr returns the address clients connect to, "127.0.0.1:PORT".
func (l *Link) Addr() string { return l.addr }

// Upstream returns the address the link forwards to.
func (l *Link) Upstream() string { return l.upstream }

// SetRTT adds round-trip time d to the link: d/2 of latency in each
// direction, on connections old and new. It replaces a previous value, and
// 0 removes it. Data already in flight keeps the latency it entered with.
func (l *Link) SetRTT(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("pgtest: link %s: negative RTT %s", l.name, d)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	l.oneWay.Store(int64(d / 2))
	return nil
}

// Cut stops the link: open connections are closed and new ones are
// refused, as when a region becomes unreachable. Restore undoes it.
// Cutting a cut link does nothing.
func (l *Link) Cut() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	l.stopListening()
	return l.closeConns(false)
}

// Restore starts a cut link again on the same address. Toxics set before
// the cut still apply. Restoring a link that is not cut does nothing.
func (l *Link) Restore() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if l.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("pgtest: link %s: restore on %s: %w", l.name, l.addr, err)
	}
	l.serve(ln)
	return nil
}

// Blackhole makes the link swallow all data in both directions while
// connections stay open and new ones are accepted, as when packets are
// dropped silently: only timeouts (such as wal_receiver_timeout) notice.
// Clear ends it.
func (l *Link) Blackhole() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if l.hasToxics(toxicBlackhole) {
		return nil
	}
	// toxiproxy's "timeout" toxic with timeout 0 drops data and never
	// closes the connection.
	return l.addToxics(toxicBlackhole, "timeout", map[string]any{"timeout": 0})
}

// ResetPeer resets every open connection with a TCP RST, in both
// directions, and keeps resetting new ones as soon as they are accepted,
// as a crashed peer or a stateful firewall would. Clear ends it.
//
// This is what toxiproxy's "reset_peer" toxic is for, but that toxic can
// turn a close into an RST (SO_LINGER=0) only on connections accepted
// after it was added, and acts only once data flows; so Link resets
// connections itself.
func (l *Link) ResetPeer() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	l.startMu.Lock()
	defer l.startMu.Unlock()
	l.reset = true
	return l.closeConnsLocked(true)
}

// Clear removes every toxic and ends ResetPeer: the link carries data
// unchanged again. A black hole's connections have lost data, so they are
// closed. Clear does not restore a cut link.
func (l *Link) Clear() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	// startMu: no connection may start between closing the black-holed
	// ones and removing the toxics.
	l.startMu.Lock()
	defer l.startMu.Unlock()
	l.reset = false
	l.oneWay.Store(0)
	var err error
	if l.hasToxics(toxicBlackhole) {
		// Removing a timeout toxic from a live pipeline closes the
		// connection but strands the goroutine feeding it, so close the
		// connections first and remove the toxic from finished pipelines.
		err = l.closeConnsLocked(false)
	}
	l.proxy.Toxics.ResetToxics(nopLogContext())
	return err
}

// Close stops the link for good, closing its connections. Closing twice
// does nothing.
func (l *Link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.stopListening()
	return l.closeConns(false)
}

func (l *Link) usable() error {
	if l.closed {
		return fmt.Errorf("pgtest: link %s: closed", l.name)
	}
	return nil
}

// addToxics adds one toxic per direction: "upstream" is client to
// upstream, "downstream" the way back. toxiproxy's in-process API takes
// the same JSON as its HTTP API.
func (l *Link) addToxics(name, typ string, attributes map[string]any) error {
	for _, stream := range []string{"upstream", "downstream"} {
		body, err := json.Marshal(map[string]any{
			"name":       name + "_" + stream,
			"type":       typ,
			"stream":     stream,
			"toxicity":   1.0,
			"attributes": attributes,
		})
		if err != nil {
			return fmt.Errorf("pgtest: link %s: %s toxic: %w", l.name, typ, err)
		}
		if _, err := l.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("pgtest: link %s: add %s toxic: %w", l.name, typ, err)
		}
	}
	return nil
}

// hasToxics reports whether addToxics added toxics under name.
func (l *Link) hasToxics(name string) bool {
	return l.proxy.Toxics.GetToxic(name+"_upstream") != nil
}

// nopLogContext carries a no-op zerolog logger: toxiproxy logs toxic
// removals through the logger found in the context.
func nopLogContext() context.Context {
	return zerolog.Nop().WithContext(context.Background())
}

// port returns the port of Addr.
func (l *Link) port() int {
	_, p, _ := net.SplitHostPort(l.addr)
	n, _ := strconv.Atoi(p)
	return n
}
