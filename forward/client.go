package forward

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/auth"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

// Defaults for zero fields of ClientConfig.
const (
	// DefaultTimeout is none: see ClientConfig.Timeout.
	DefaultTimeout time.Duration = 0
	// probeTimeout bounds the client's own small calls (learning an
	// executor's instance).
	probeTimeout        = 10 * time.Second
	DefaultConnectWait  = time.Second
	DefaultMaxRecvBytes = 64 << 20
	// DefaultMaxSendBytes is gRPC's own default bound on a message sent.
	DefaultMaxSendBytes    = math.MaxInt32
	retryBackoffMin        = 20 * time.Millisecond
	retryBackoffMax        = 500 * time.Millisecond
	defaultKeepaliveTime   = 10 * time.Second
	defaultKeepaliveTimout = 5 * time.Second
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Target is the executor's gRPC address: "host:port", a resolver URL
	// such as "dns:///iad.myapp.internal:5444" that resolves to every
	// primary-region instance, or several candidates separated by commas
	// ("a:5480,b:5480"), of which HealthChecked picks the serving ones.
	Target string
	// HealthChecked sends units only to executors whose gRPC health
	// service reports SERVING (round-robin among them): with a Target that
	// names executors in several regions, units follow the primary when
	// it moves. See candidates.go.
	HealthChecked bool
	// Secret is the shared secret the executor authenticates with: the
	// connection is mutual TLS keyed from it, which needs no certificate.
	// OldSecrets are offered too, for a rotation without downtime (an
	// executor that knows only one of them still accepts the client).
	// Without a Secret the connection is plaintext, which only an
	// executor without a secret, on loopback, accepts.
	Secret     string
	OldSecrets []string
	// TLS, if set, replaces the TLS keyed from the secret: for an executor
	// served on the application's own gRPC server with its own
	// certificate (RegisterGRPC). Each call then carries an HMAC of Secret.
	TLS *tls.Config
	// Timeout, if set, bounds one forwarded unit (a statement, a
	// transaction's round trip, a call) when the caller's context has no
	// earlier deadline. Zero (DefaultTimeout): no bound of the client's
	// own, as on a direct connection to PostgreSQL; the caller's deadline
	// and the executor's limits apply, and keepalive detects a dead
	// executor or link within about 15 seconds.
	Timeout time.Duration
	// ConnectWait bounds how long a unit waits for a connection to the
	// executor before failing with ErrUnavailable (nothing sent); default
	// DefaultConnectWait. It absorbs an executor restart without making
	// every write hang for Timeout while the primary region is down.
	ConnectWait time.Duration
	// MaxRecvBytes bounds a response message; keep it above the executor's
	// MaxResponseBytes.
	MaxRecvBytes int
	// MaxSendBytes bounds a request message: a larger one fails with
	// ErrTooLarge before anything is sent. Default DefaultMaxSendBytes.
	// The client gives the same bound to gRPC, after DialOptions: set it
	// here, not with a gRPC call option.
	MaxSendBytes int
	// DialOptions are appended to the client's own gRPC dial options.
	DialOptions []grpc.DialOption
	// NoSessions sends every lone statement as a call of its own instead of
	// as a message of a long-lived session stream.
	NoSessions bool
	// SessionHeaders, if set, returns headers to send with a statement that
	// travels on a session, where a call would carry them as metadata (the
	// W3C trace context, for one); see executor.Config.SessionUnit.
	SessionHeaders func(ctx context.Context) map[string]string
	// Identity, if set, is the database the client's local replica
	// replicates (ReadIdentity on the replica). It travels with every unit,
	// and an executor that serves another database refuses the unit before
	// it runs, with an error matching ErrDatabaseMismatch that names both.
	Identity *Identity
	// Logger receives connection events at debug level. Nil: silent.
	Logger *slog.Logger
}

// Client is a connection to an executor, shared by every database/sql
// connection of its Connector: one HTTP/2 connection carries all calls.
type Client struct {
	cfg       ClientConfig
	transport *clientTransport
	cc        *grpc.ClientConn
	api       forwardpb.ExecutorClient
	health    healthpb.HealthClient
	log       *slog.Logger

	inst       instances     // the executor instance of each connection
	readyEpoch atomic.Uint64 // counts transitions to READY

	rpcs, units, retries atomic.Uint64

	sessionsOff atomic.Bool // the executor has no Session method
	lastUnready atomic.Pointer[unready]
	sessMu      sync.Mutex
	sess        [sessionCount]*session
	sessNext    int
	baseCtx     context.Context // lives until Close

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewClient creates a client and starts connecting in the background.
// Close it when done.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Target == "" {
		return nil, errors.New("forward: client: empty Target")
	}
	if cfg.Timeout < 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxRecvBytes <= 0 {
		cfg.MaxRecvBytes = DefaultMaxRecvBytes
	}
	if cfg.MaxSendBytes <= 0 {
		cfg.MaxSendBytes = DefaultMaxSendBytes
	}
	if cfg.ConnectWait <= 0 {
		cfg.ConnectWait = DefaultConnectWait
	}
	security, transport, err := dialSecurity(&cfg)
	if err != nil {
		return nil, fmt.Errorf("forward: client: %w", err)
	}
	opts := append(security,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: defaultKeepaliveTime, Timeout: defaultKeepaliveTimout, PermitWithoutStream: true}),
		// Reconnect well within ConnectWait of the executor coming back,
		// rather than after gRPC's default backoff of up to two minutes: a
		// unit that waits for a connection finds one before it gives up,
		// however many failures grew the backoff before. (Cutting the
		// backoff short when a unit waits, with ResetConnectBackoff, races
		// in gRPC with the balancer's own changes to its connections.)
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           reconnectBackoff(cfg.ConnectWait),
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvBytes)),
		grpc.WithChainUnaryInterceptor(protocolUnary),
		grpc.WithChainStreamInterceptor(protocolStream),
	)
	target, topts, err := targetOptions(&cfg)
	if err != nil {
		return nil, fmt.Errorf("forward: client: %w", err)
	}
	opts = append(opts, topts...)
	opts = append(opts, cfg.DialOptions...)
	// The limit checkSend applies, so that a request over it is refused by
	// the client's own check, which knows that nothing was sent.
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.MaxSendBytes)))
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("forward: client: %s: %w", cfg.Target, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, transport: transport, cc: cc, api: forwardpb.NewExecutorClient(cc), health: healthpb.NewHealthClient(cc), log: cfg.Logger, stop: stop, baseCtx: ctx}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.wg.Add(1)
	go c.watch(ctx)
	cc.Connect()
	return c, nil
}

func protocolUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(auth.WithProtocol(ctx, protocol.Version), method, req, reply, cc, opts...)
}

func protocolStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(auth.WithProtocol(ctx, protocol.Version), desc, cc, method, opts...)
}

// Target returns the executor address the client was created with.
func (c *Client) Target() string { return c.cfg.Target }

// Close closes the connection. Calls in flight fail.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.stop()
		c.sessMu.Lock()
		for _, s := range c.sess {
			if s != nil {
				s.fail(ErrClosed)
			}
		}
		c.sessMu.Unlock()
		err = c.cc.Close()
		c.wg.Wait()
	})
	return err
}

// ClientStats are counters of a Client.
type ClientStats struct {
	RPCs    uint64 // network round trips to the executor
	Units   uint64 // forwarded units started (statements, transactions, calls)
	Retries uint64 // attempts repeated after a lost reply

	// Connected reports whether a connection to the executor is ready
	// now. A unit started while it is false and failing before one
	// becomes ready was never sent.
	Connected bool
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{RPCs: c.rpcs.Load(), Units: c.units.Load(), Retries: c.retries.Load(),
		Connected: c.cc.GetState() == connectivity.Ready}
}

// watch follows the connection state: it counts transitions to READY, by
// which an attempt knows whether its request can have left, and learns the
// executor instance on every new connection.
func (c *Client) watch(ctx context.Context) {
	defer c.wg.Done()
	for {
		s := c.cc.GetState()
		if s == connectivity.Ready {
			c.readyEpoch.Add(1)
			c.wg.Add(1)
			go c.learnInstance(ctx)
		}
		if s == connectivity.Shutdown || !c.cc.WaitForStateChange(ctx, s) {
			return
		}
	}
}

func newID() []byte {
	b := make([]byte, 16)
	rand.Read(b)
	return b
}

// unitContext bounds a unit by the configured timeout unless ctx ends
// sooner. Without a timeout (the default) it is ctx itself: a context per
// statement would cost an allocation and a registration with ctx's parent
// for nothing.
func (c *Client) unitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.Timeout == 0 {
		return ctx, func() {}
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= c.cfg.Timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.Timeout)
}

// awaitReady waits, at most ConnectWait, for a ready connection to the
// executor. An error means nothing can be sent now.
func (c *Client) awaitReady(ctx context.Context) error {
	s := c.cc.GetState()
	if s == connectivity.Ready {
		return nil
	}
	// database/sql tries a statement that failed with ErrBadConn twice more
	// at once; waiting ConnectWait again each time would triple the stall.
	// So within ConnectWait of a wait that gave up, with no connection
	// ready since, a unit waits only a tenth of it: long enough for a
	// connection to a reachable executor (the wait kicks the reconnect).
	wait := c.cfg.ConnectWait
	if last := c.lastUnready.Load(); last != nil && time.Since(last.at) < c.cfg.ConnectWait && c.readyEpoch.Load() == last.epoch {
		wait /= 10
		if err := c.waitReady(ctx, s, wait); err != nil {
			return c.refusedOr(fmt.Errorf("no connection to the executor (state %s); it was not ready %v ago either", c.cc.GetState(), time.Since(last.at).Round(time.Millisecond)))
		}
		return nil
	}
	epoch := c.readyEpoch.Load()
	err := c.waitReady(ctx, s, wait)
	if err != nil {
		c.lastUnready.Store(&unready{at: time.Now(), epoch: epoch})
	}
	return c.refusedOr(err)
}

// reconnectBackoff is the pause between attempts to reach the executor:
// at most a tenth of connectWait (between 20 ms and 1 s), so that a unit
// waiting connectWait sees several attempts however many failures came
// before, even when the link comes and goes faster than that; an outage
// costs each client at most ten connection attempts a second.
func reconnectBackoff(connectWait time.Duration) backoff.Config {
	maxDelay := min(max(connectWait/10, 20*time.Millisecond), time.Second)
	return backoff.Config{BaseDelay: min(50*time.Millisecond, maxDelay), Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxDelay}
}

// unready is when awaitReady last gave up, and how many times a
// connection had been ready then.
type unready struct {
	at    time.Time
	epoch uint64
}

// waitReady waits up to wait for a ready connection, from state s.
func (c *Client) waitReady(ctx context.Context, s connectivity.State, wait time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Shutdown:
			return ErrClosed
		case connectivity.Idle:
			c.cc.Connect()
		}
		if !c.cc.WaitForStateChange(wctx, s) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("no connection to the executor within %v (state %s)", wait, s)
		}
		s = c.cc.GetState()
	}
}

// sendState is what the client knew about the connection when an attempt
// left: enough to tell afterwards whether it can have been sent.
type sendState struct {
	ready bool
	epoch uint64
}

func (c *Client) snapshot() sendState {
	return sendState{ready: c.cc.GetState() == connectivity.Ready, epoch: c.readyEpoch.Load()}
}

// neverSent reports whether no connection was ever ready during the
// attempt: then no stream was created and the request did not leave.
func (c *Client) neverSent(before sendState) bool {
	return !before.ready && c.readyEpoch.Load() == before.epoch && c.cc.GetState() != connectivity.Ready
}

// attempt is one try of a unit: it sends u, fills trailer and returns the
// connection it went on ("" if none).
type attempt func(ctx context.Context, u *forwardpb.Unit, trailer *metadata.MD) (on connID, err error)

// unit returns the Unit of an attempt: its request ID, its number (1 as
// long as no earlier attempt may have reached an executor), the instance
// the first attempt that may have arrived went to, and the database the
// client's replica replicates.
func (c *Client) unit(id []byte, n uint32, inst string) *forwardpb.Unit {
	u := &forwardpb.Unit{RequestId: id, Attempt: n, Instance: inst}
	if c.cfg.Identity != nil {
		u.SystemIdentifier, u.Database = c.cfg.Identity.SystemIdentifier, c.cfg.Identity.Database
	}
	return u
}

// do runs a unit with exactly-once retries: after a failure that may have
// happened after sending, it asks again with the same request ID (the
// executor answers from its ledger instead of running it twice) until the
// unit's deadline or protocol.RetryHorizon after its first attempt, whichever comes
// first. It returns nil or an *Error, *CommittedError or a context error.
func (c *Client) do(ctx context.Context, op string, id []byte, rcpt *Receipt, try attempt) error {
	c.units.Add(1)
	first := time.Now()
	backoff := retryBackoffMin
	n := uint32(1)     // attempts that may have reached an executor, plus one
	var firstOn connID // where the first of those went
	var lastErr error
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if n > 1 {
			// Every answer about the unit comes within the horizon.
			actx, cancel = context.WithDeadline(ctx, first.Add(protocol.RetryHorizon))
		}
		if err := c.awaitReady(actx); err != nil {
			cancel()
			lastErr = err
			if n == 1 || actx.Err() != nil {
				break
			}
			// An earlier attempt may have arrived: keep asking, below.
		} else {
			inst := ""
			if n > 1 {
				inst = c.inst.of(firstOn)
			}
			before := c.snapshot()
			var md metadata.MD
			c.rpcs.Add(1)
			rcpt.roundTrip()
			on, err := try(actx, c.unit(id, n, inst), &md)
			cancel()
			if err == nil {
				return nil
			}
			lastErr = err
			sent := !c.neverSent(before) && !errors.As(err, new(notSent))
			if e := c.failure(op, id, err, md); e != nil {
				return e
			}
			if sent {
				if n == 1 {
					firstOn = on
				}
				n++
			}
		}
		// The request may have been sent and its reply lost: ask again.
		if ctx.Err() != nil || time.Since(first)+backoff > protocol.RetryHorizon {
			break
		}
		c.backOff(ctx, backoff)
		if ctx.Err() != nil {
			break
		}
		backoff = min(backoff*2, retryBackoffMax)
	}
	kind := ErrInDoubt
	if n == 1 {
		kind = ErrUnavailable
		if errors.Is(lastErr, ErrUnauthenticated) {
			kind = ErrUnauthenticated // the executor refused the connection
		}
	}
	if ctx.Err() != nil {
		// Let errors.Is see the caller's cancellation or deadline too.
		lastErr = fmt.Errorf("%w (last attempt: %v)", ctx.Err(), lastErr)
	}
	return &Error{Op: op, Target: c.cfg.Target, RequestID: hex.EncodeToString(id), Kind: kind, Err: lastErr}
}

// Ping checks that the executor answers and reports its primary healthy.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := c.unitContext(ctx)
	defer cancel()
	if err := c.awaitReady(ctx); err != nil {
		return &Error{Op: "ping", Target: c.cfg.Target, Kind: ErrUnavailable, Err: err}
	}
	before := c.snapshot()
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: forwardpb.Executor_ServiceDesc.ServiceName})
	if err != nil {
		kind := ErrInDoubt
		if c.neverSent(before) {
			kind = ErrUnavailable
		}
		if status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded {
			kind = ErrUnavailable // a health check changes nothing: always safe
		}
		return &Error{Op: "ping", Target: c.cfg.Target, Kind: kind, Err: err}
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return &Error{Op: "ping", Target: c.cfg.Target, Kind: ErrNotPrimary, Err: fmt.Errorf("health status %s", resp.GetStatus())}
	}
	return nil
}

// Outcome is what Resolve learned about a unit.
type Outcome int

const (
	OutcomeUnknown      Outcome = iota // the executor cannot tell
	OutcomeRunning                     // still running
	OutcomeCommitted                   // committed (see the LSN)
	OutcomeNotCommitted                // did not commit: safe to run again
)

func (o Outcome) String() string {
	return [...]string{"unknown", "running", "committed", "not committed"}[o]
}

// Resolve asks the executor what became of the unit with requestID (hex,
// as in Error.RequestID). It is exact within the executor's DedupWindow
// of the unit and on the same executor process; otherwise it answers
// OutcomeUnknown. Under durable deduplication it is exact on any executor
// within DedupRetention of the unit, and an answer of OutcomeNotCommitted
// is final: the unit can no longer commit.
func (c *Client) Resolve(ctx context.Context, requestID string) (Outcome, lsn.LSN, error) {
	id, err := hex.DecodeString(requestID)
	if err != nil || len(id) != 16 {
		return OutcomeUnknown, 0, fmt.Errorf("forward: resolve: bad request ID %q", requestID)
	}
	out, commitLSN, _, err := c.resolve(ctx, id, "")
	return out, commitLSN, err
}

// resolve asks the executor about unit id; for a transaction that
// committed with its last statement it also returns that statement's
// result, when the executor still holds it.
func (c *Client) resolve(ctx context.Context, id []byte, inst string) (Outcome, lsn.LSN, *forwardpb.Result, error) {
	if err := c.awaitReady(ctx); err != nil {
		return OutcomeUnknown, 0, nil, err
	}
	c.rpcs.Add(1)
	var p peer.Peer
	resp, err := c.api.Resolve(ctx, &forwardpb.ResolveRequest{Unit: c.unit(id, 2, inst)}, grpc.Peer(&p))
	if err != nil {
		return OutcomeUnknown, 0, nil, err
	}
	c.inst.note(connOf(&p), resp.GetInstance())
	switch resp.GetOutcome() {
	case forwardpb.ResolveResponse_OUTCOME_RUNNING:
		return OutcomeRunning, 0, nil, nil
	case forwardpb.ResolveResponse_OUTCOME_COMMITTED:
		return OutcomeCommitted, lsn.LSN(resp.GetCommitLsn()), resp.GetResult(), nil
	case forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED:
		return OutcomeNotCommitted, 0, nil, nil
	}
	return OutcomeUnknown, 0, nil, nil
}
