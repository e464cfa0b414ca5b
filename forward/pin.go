package forward

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/sqlscan"
)

// ErrPinLost: the pinned primary connection of a connection (see Pin)
// broke off, and with it the session state its statements had set
// (settings, temporary tables, session advisory locks). The statement
// that gets it did not run; what ran before is as its own answers said.
// Not safe to retry on its own: rerun the whole block on a new connection.
var ErrPinLost = errors.New("the pinned primary connection was lost with its session state")

// Pin makes c, a connection of a forwarding *sql.DB (Client.OpenDB), run
// everything on one primary connection of the executor until c is
// closed (returned to its pool), as a connection of a plain PostgreSQL
// pool would: statements
// outside a transaction each commit on their own, and session state one
// of them sets (SET, temporary tables, session advisory locks, prepared
// statements) is there for the next, and for transactions begun on c. No
// other caller sees it, and none of it outlives the pin: closing c ends
// it, and the executor then closes the primary connection if any state
// may remain on it.
//
// The primary connection is taken with c's first statement. It holds one
// of the executor's transaction slots meanwhile, so keep pinned
// connections short-lived, as a block of work.
func Pin(c *sql.Conn) error {
	return c.Raw(func(dc any) error {
		cn, ok := dc.(*conn)
		if !ok {
			return fmt.Errorf("forward: pin: %T is not a connection of a forwarding database", dc)
		}
		if cn.pin == nil {
			cn.pin = &pinLink{c: cn.c}
		}
		return nil
	})
}

// pinLink is the Pin stream of a pinned connection: a txLink for each
// unit that runs on it, one after another.
type pinLink struct {
	c *Client
	bidi
	lost error // set when the stream broke: later units fail with ErrPinLost
}

var _ txLink = (*pinLink)(nil)

func onPin(l txLink) bool {
	_, ok := l.(*pinLink)
	return ok
}

// start opens the Pin stream, under a context of its own that keeps ctx's
// values (metadata, traces) and ends with the pin.
func (l *pinLink) start(ctx context.Context) error {
	if err := l.c.awaitReady(ctx); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b, err := l.c.openBidi(ctx, sctx, cancel, func(sctx context.Context) (forwardpb.Executor_TxClient, error) { return l.c.api.Pin(sctx) })
	if err != nil {
		return err
	}
	l.bidi = b
	return nil
}

func (l *pinLink) open(ctx, _ context.Context, begin *forwardpb.TxBegin) (error, error) {
	if l.lost != nil {
		return ErrPinLost, l.lost
	}
	if l.stream == nil {
		if err := l.start(ctx); err != nil {
			// Nothing was sent: the pin can still start with the next unit.
			return ErrUnavailable, err
		}
	}
	if err := l.stream.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: begin}}); err != nil {
		// Not transmitted; the stream is gone, and the pin with it.
		err = l.recvError(err)
		l.lose(err)
		return ErrPinLost, withCtxErr(err, ctx)
	}
	return nil, nil
}

// lone is not used: a pinned connection's autocommit statement is a
// unit of the pin (TxBegin with commit), never a unit of its own, which
// would run on another primary connection.
func (l *pinLink) lone(context.Context, *forwardpb.Statement, []byte, *Receipt, func(error, bool) error) (*answer, error) {
	return nil, errors.New("forward: a pinned connection runs no lone units")
}

// close ends a unit's use of the stream. A unit that broke off leaves the
// primary connection in a state the client no longer knows: the pin ends
// with it.
func (l *pinLink) close(broken bool) {
	if broken {
		l.lose(fmt.Errorf("forward: a unit broke off"))
	}
}

// lose ends the pin after a failure: later units fail with ErrPinLost.
// Ending the stream makes the executor roll back what is open and release
// the connection (closing it if session state may remain on it).
func (l *pinLink) lose(cause error) {
	if l.lost == nil {
		l.lost = cause
	}
	l.end()
}

// run runs one statement outside a transaction on the pin: a unit of its
// own, sent with COMMIT as the last statement of a transaction begun with
// it. A COMMIT that fails after the statement's result (a deferred
// constraint) follows the result, as for a lone statement.
func (l *pinLink) run(ctx context.Context, st *forwardpb.Statement) (*answer, error) {
	t := &clientTx{c: l.c, link: l, ctx: ctx, id: newID(), done: func() {}}
	a, err := t.statement(LastStatement(ctx), st)
	if err != nil {
		return nil, err
	}
	if a.next != nil {
		// A result in parts: its COMMIT's outcome comes with the last.
		next := a.next
		a.next = func() (*forwardpb.Result, error) {
			res, err := next()
			if err == nil && t.commitErr != nil && !t.reading {
				return nil, t.commitErr
			}
			return res, err
		}
	}
	a.endErr = t.commitErr
	return a, nil
}

// SetsSessionState reports whether sql can by itself leave session state
// on its connection that a later statement would see: SET and RESET
// (other than SET LOCAL), temporary tables, PREPARE, LISTEN, DECLARE, DO,
// set_config, session advisory locks and the like. Such a statement needs
// a pinned connection (Pin) to mean what it says on a direct one.
func SetsSessionState(sql string) bool { return sqlscan.Classify(sql) == sqlscan.TaintSure }
