package forward

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/flypg/flypg/forward/forwardpb"
)

// A retry names the executor instance its unit's first attempt went to: an
// executor that does not know the unit runs it only if it is that instance
// (then the first attempt never arrived). The name must be right: naming B
// for an attempt that went to A, and committed there, lets B run it again.
// So an instance is learned for one connection (a gRPC transport, told apart
// by its local and remote addresses) and used only for attempts sent on
// that same connection; after a reconnect, to the same address or another,
// nothing is known until the new connection tells.

// conn identifies one connection to an executor; "" is unknown.
type connID string

func connOf(p *peer.Peer) connID {
	if p == nil || p.Addr == nil || p.LocalAddr == nil {
		return ""
	}
	return connID(p.LocalAddr.String() + ">" + p.Addr.String())
}

// connOfStream is the connection a stream runs on.
func connOfStream(ctx context.Context) connID {
	p, _ := peer.FromContext(ctx)
	return connOf(p)
}

// knownConns is how many connections' instances a client remembers: the
// current one and a few before it, whose units may still be retried.
const knownConns = 16

// instances maps connections to the executor instance at their other end.
type instances struct {
	mu    sync.Mutex
	byID  map[connID]string
	order []connID
}

// note records that conn leads to instance inst.
func (in *instances) note(conn connID, inst string) {
	if conn == "" || inst == "" {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.byID == nil {
		in.byID = map[connID]string{}
	}
	if _, ok := in.byID[conn]; !ok {
		in.order = append(in.order, conn)
		if len(in.order) > knownConns {
			delete(in.byID, in.order[0])
			in.order = append(in.order[:0], in.order[1:]...)
		}
	}
	in.byID[conn] = inst
}

// of returns the instance at the other end of conn, or "".
func (in *instances) of(conn connID) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.byID[conn]
}

// learnInstance asks the executor on the connection just made who it is,
// with a Resolve of a fresh ID (a first attempt: nothing is looked up).
func (c *Client) learnInstance(ctx context.Context) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var p peer.Peer
	resp, err := c.api.Resolve(ctx, &forwardpb.ResolveRequest{Unit: &forwardpb.Unit{RequestId: newID(), Attempt: 1}}, grpc.Peer(&p))
	if err != nil {
		c.log.Debug("forward: learn executor instance", "target", c.cfg.Target, "err", err)
		return
	}
	c.inst.note(connOf(&p), resp.GetInstance())
}
