package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/auth"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/lsn"
)

type ctxwatchHandler = ctxwatch.Handler

// Defaults for zero fields of Config.
const (
	// DefaultMaxRequestBytes is PostgreSQL's own bound on one message
	// (1 GiB): a request the primary would take is never refused for its
	// size. Callers are authenticated before anything of a request is
	// read, so only the app's own nodes can send one that large.
	DefaultMaxRequestBytes = 1 << 30
	// DefaultMaxResponseBytes bounds one row of a result (results travel
	// in parts, whatever their total size).
	DefaultMaxResponseBytes = 16 << 20
	// A transaction idle this long, or open this long, is rolled back:
	// generous for an app's transactions, short enough that one an app
	// forgot to end does not hold a primary connection for good.
	DefaultTxIdleTimeout   = 5 * time.Minute
	DefaultTxMaxDuration   = time.Hour
	DefaultDedupWindow     = 30 * time.Second
	DefaultDedupMaxBytes   = 64 << 20
	DefaultMaxReplayBytes  = 16 << 10
	DefaultHealthInterval  = time.Second
	DefaultSessionMaxBytes = 32 << 20
	// DefaultPoolMaxConns sizes the pool the executor opens from a DSN
	// without pool_max_conns: enough for the units an ordinary app has in
	// flight at once (a forwarded transaction holds its connection for its
	// round trips across regions), well inside PostgreSQL's default
	// max_connections of 100 with a few executor instances.
	DefaultPoolMaxConns = 20

	// MinDedupWindow is the shortest DedupWindow New accepts: a
	// client retries and resolves a unit for at most protocol.RetryHorizon after
	// its first attempt, and an answer must not be forgotten while a
	// retry may still be heard.
	MinDedupWindow = protocol.RetryHorizon + 5*time.Second

	cancelDeadlineDelay = time.Second
	commitTimeout       = 30 * time.Second
)

// CallHandler runs the functions a Call names. forward routes, authenticates
// and deduplicates calls; what a function does is up to the handler.
type CallHandler interface {
	// HandleCall runs the function name with payload. It returns nil error
	// only if the function's transaction committed; commitLSN is the
	// primary's insert LSN read after the commit (0 if nothing was
	// written). For an unregistered name it returns an error matching
	// protocol.ErrUnknownFunction.
	HandleCall(ctx context.Context, name string, payload []byte) (out []byte, commitLSN lsn.LSN, err error)
}

// Config configures an Executor.
type Config struct {
	// DSN of the primary. The executor opens and owns a pool with
	// PoolConfig(DSN). Alternatively set Pool.
	DSN string
	// Pool is a pool of connections to the primary, used as given (build
	// its config with PoolConfig so that cancellation reaches the primary).
	// Without DSN or Pool the executor serves only Call.
	Pool *pgxpool.Pool

	// Calls runs registered functions for Call; nil refuses every Call.
	Calls CallHandler

	// Secret authenticates clients (at least 16 bytes, the same on every
	// node): the executor serves only mutual TLS keyed from it (see the
	// README's Security section). OldSecrets are also accepted, for a
	// rotation without downtime.
	Secret     string
	OldSecrets []string
	// AllowUnauthenticated serves without a secret, to loopback callers
	// only (checked for every call; Serve also refuses a non-loopback
	// address), or to callers whose client certificate the application's
	// own TLS verified (RegisterGRPC). For local development.
	AllowUnauthenticated bool

	// MaxConcurrent bounds the units (statements, transactions, calls,
	// resolves that read the primary) run at once; zero means the pool's
	// MaxConns. More wait for a slot, as plain GORM waits for its pool:
	// until shortly before the unit's deadline (so that the answer
	// reaches the client in time), or for QueueTimeout if that is set and
	// shorter; then they are refused as busy, with nothing run.
	// Transactions, which hold their slot while their client talks across
	// regions, may take at most three quarters of the slots, so that lone
	// statements and calls (which a client may send while its
	// transaction is open) always find one.
	MaxConcurrent int
	QueueTimeout  time.Duration

	// MaxRequestBytes bounds a request message (Serve's gRPC server);
	// MaxResponseBytes bounds one row of a statement's result (results
	// travel in parts), or a whole result for a client that takes results
	// whole.
	MaxRequestBytes, MaxResponseBytes int
	// MaxArgValues bounds the argument values (array elements count
	// each) of one request, which decoded cost far more than their
	// encoding; a request with more is refused before it is decoded.
	MaxArgValues int
	// MaxRowBytes bounds one message from the primary, hence one result
	// row, before it is buffered; default MaxResponseBytes plus 64 KiB.
	// A larger row breaks the primary connection (the statement is in
	// doubt if it ran in its own transaction).
	MaxRowBytes int

	// MaxConnections bounds the connections the executor's servers hold;
	// more are closed at once. HandshakeTimeout bounds the TLS handshake
	// (and the first frames) of a connection; IdleConnTimeout closes a
	// connection without calls for that long. MaxStreamsPerConn bounds the
	// calls open at once on one connection, MaxHeaderBytes the headers of
	// one call. They apply to servers built with ServerOptions.
	MaxConnections, MaxStreamsPerConn, MaxHeaderBytes int
	HandshakeTimeout, IdleConnTimeout                 time.Duration

	// TxIdleTimeout ends a transaction that waits this long for its next
	// message; TxMaxDuration ends one that lasts longer. Both roll back.
	TxIdleTimeout, TxMaxDuration time.Duration

	// StatementTimeout, if set, is the primary's statement_timeout for
	// forwarded statements (pools the executor opens from DSN): a longer
	// statement fails with SQLSTATE 57014 and nothing of it commits.
	StatementTimeout time.Duration

	// DedupWindow is how long the outcome of a finished unit is remembered
	// for retries (at least MinDedupWindow). DedupMaxBytes bounds the
	// memory of what is remembered: an entry costs about 200 bytes plus
	// its kept answer; when the budget is used up, answers are no longer
	// kept and then new units are refused as busy until old entries
	// expire (64 MiB: about 300,000 units in the window, 10,000 a second
	// for 30 s). Answers over MaxReplayBytes are never kept.
	DedupWindow    time.Duration
	DedupMaxBytes  int
	MaxReplayBytes int

	// SessionMaxBytes bounds the memory one session stream holds in
	// requests received and replies not yet sent: while it is used up, the
	// executor receives no more messages of that stream (back-pressure
	// through gRPC flow control) instead of buffering them.
	SessionMaxBytes int

	// DurableDedup also records the request ID of every committed unit in
	// a table on the primary (DedupTable, created if missing; rows kept for
	// DedupRetention), in the unit's own transaction. Exactly-once then
	// holds across executor restarts and between executor instances, where
	// the in-memory ledger alone answers "in doubt"; it costs one more row
	// written per unit. DedupRetention must exceed the longest time a unit
	// may be retried or resolved: an ID swept from the table is unknown,
	// and Resolve would then declare it not committed. See durable.go.
	DurableDedup   bool
	DedupTable     string
	DedupRetention time.Duration

	// HealthInterval is how often the executor checks the primary for the
	// gRPC health service.
	HealthInterval time.Duration

	// Logger receives errors and, at debug level, each unit. Nil: silent.
	Logger *slog.Logger

	// ServerOptions are added to those of Serve's gRPC server, e.g. a
	// stats handler for tracing.
	ServerOptions []grpc.ServerOption

	// SessionUnit, if set, wraps every statement that arrives on a session
	// (where a stats handler sees only the stream): it gets the headers the
	// client sent with it (forward.ClientConfig.SessionHeaders) and returns the
	// context to run it in and a function called with its outcome — for a
	// tracing span per statement, say.
	SessionUnit func(ctx context.Context, headers map[string]string) (context.Context, func(error))
}

// Executor runs forwarded work on the primary. It implements the
// flypg.forward.v1.Executor gRPC service and the standard health service.
type Executor struct {
	cfg      Config
	pool     *pgxpool.Pool
	ownPool  bool
	keys     *auth.Keyring  // nil without a secret
	verifier *auth.Verifier // calls signed inside the application's TLS
	instance string
	ledger   *ledger
	slots    chan struct{} // one per running unit
	txSlots  chan struct{} // one per running transaction, fewer than slots
	health   *health.Server
	log      *slog.Logger

	durable *durable // nil without DurableDedup

	fetches sync.Map // fetch token -> *relay: results whose rest a client fetches

	walSegSize atomic.Uint64
	ident      atomic.Pointer[protocol.Identity] // the database the pool serves, once read
	inFlight   atomic.Int64
	openTx     atomic.Int64

	conns, refusedConns atomic.Int64 // see limitedTransport
	refusedLogged       atomic.Int64 // when a refusal was last logged, Unix ns

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu      sync.Mutex
	servers []*grpc.Server
}

// New checks cfg, opens the pool if cfg.DSN is set, and starts the
// health checker. Close releases everything. Nothing is acquired before the
// whole configuration is checked.
func New(ctx context.Context, cfg Config) (*Executor, error) {
	if cfg.Secret == "" && !cfg.AllowUnauthenticated {
		return nil, errors.New("forward: executor: no Secret: the executor runs SQL for its callers and must authenticate them (set Secret, or AllowUnauthenticated for local development)")
	}
	if cfg.DSN != "" && cfg.Pool != nil {
		return nil, errors.New("forward: executor: set DSN or Pool, not both")
	}
	setDefaults(&cfg)
	if cfg.DedupWindow < MinDedupWindow {
		return nil, fmt.Errorf("forward: executor: DedupWindow %v is shorter than MinDedupWindow (%v): clients retry and resolve units for up to %v, and an answer forgotten before that could let a retry run twice", cfg.DedupWindow, MinDedupWindow, protocol.RetryHorizon)
	}
	var d *durable
	if cfg.DurableDedup {
		table := cfg.DedupTable
		if table == "" {
			table = DefaultDedupTable
		}
		if !identRE.MatchString(table) {
			return nil, fmt.Errorf("forward: executor: DedupTable %q is not a plain lower-case identifier", table)
		}
		retention := cfg.DedupRetention
		if retention <= 0 {
			retention = DefaultDedupRetention
		}
		if retention < cfg.DedupWindow {
			return nil, fmt.Errorf("forward: executor: DedupRetention %v is shorter than DedupWindow %v", retention, cfg.DedupWindow)
		}
		d = &durable{table: table, retention: retention}
	}
	keys, verifier, err := newAuth(cfg.Secret, cfg.OldSecrets)
	if err != nil {
		return nil, fmt.Errorf("forward: executor: %w", err)
	}
	var pc *pgxpool.Config
	if cfg.DSN != "" {
		var err error
		if pc, err = PoolConfig(cfg.DSN); err != nil {
			return nil, err
		}
		if cfg.StatementTimeout > 0 {
			pc.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
		}
		// If this process stalls with a transaction open, the primary ends
		// it on its own rather than holding its locks forever.
		pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt((2 * cfg.TxIdleTimeout).Milliseconds(), 10)
	}

	// Everything checked: from here on, only acquisitions.
	x := &Executor{cfg: cfg, pool: cfg.Pool, keys: keys, verifier: verifier, durable: d, health: health.NewServer(), stop: make(chan struct{}), log: cfg.Logger}
	x.forgetSecrets()
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	if pc != nil {
		var err error
		if x.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return nil, fmt.Errorf("forward: executor: open pool: %w", err)
		}
		x.ownPool = true
	}
	if x.cfg.MaxConcurrent <= 0 {
		x.cfg.MaxConcurrent = 64
		if x.pool != nil {
			x.cfg.MaxConcurrent = int(x.pool.Config().MaxConns)
		}
	}
	x.slots = make(chan struct{}, x.cfg.MaxConcurrent)
	x.txSlots = make(chan struct{}, max(1, x.cfg.MaxConcurrent-x.cfg.MaxConcurrent/4))
	var id [8]byte
	rand.Read(id[:])
	x.instance = hex.EncodeToString(id[:])
	x.ledger = newLedger(cfg.DedupWindow, cfg.DedupMaxBytes, cfg.MaxReplayBytes)

	// The first look at the primary happens before New returns, so
	// that a client connecting right after it finds the status it will
	// keep, not a NOT_SERVING that only means "not looked yet".
	first, _ := x.probe()
	x.health.SetServingStatus("", first)
	x.health.SetServingStatus(forwardpb.Executor_ServiceDesc.ServiceName, first)
	x.wg.Add(1)
	go x.checkHealth(first)
	if x.durable != nil && x.pool != nil {
		x.wg.Add(1)
		go x.sweep(x.durable)
	}
	return x, nil
}

func setDefaults(c *Config) {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.TxIdleTimeout, DefaultTxIdleTimeout)
	def(&c.TxMaxDuration, DefaultTxMaxDuration)
	def(&c.DedupWindow, DefaultDedupWindow)
	def(&c.HealthInterval, DefaultHealthInterval)
	defInt(&c.MaxRequestBytes, DefaultMaxRequestBytes)
	defInt(&c.MaxResponseBytes, DefaultMaxResponseBytes)
	defInt(&c.DedupMaxBytes, DefaultDedupMaxBytes)
	defInt(&c.SessionMaxBytes, DefaultSessionMaxBytes)
	defInt(&c.MaxReplayBytes, DefaultMaxReplayBytes)
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.IdleConnTimeout, DefaultIdleConnTimeout)
	defInt(&c.MaxConnections, DefaultMaxConnections)
	defInt(&c.MaxStreamsPerConn, DefaultMaxStreamsPerConn)
	defInt(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	defInt(&c.MaxArgValues, DefaultMaxArgValues)
	defInt(&c.MaxRowBytes, c.MaxResponseBytes+recvMargin)
}

// Instance returns the random ID of this executor process.
func (x *Executor) Instance() string { return x.instance }

// Register adds the executor's services (forwarding and health) to s, for
// applications that run their own gRPC server.
func (x *Executor) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(serviceDesc(), &service{x: x})
	healthpb.RegisterHealthServer(s, x.health)
}

// ServerOptions are the gRPC server options Serve uses: transport
// credentials (TLS keyed from the secret, or plaintext for loopback
// without one) and a connection cap, authentication of every call from its
// headers before its messages are read, the limits of Config, and
// keepalive settings that match the client's. An application serving the
// executor on its own server (RegisterGRPC) should build that server with
// them; options it adds later take precedence.
func (x *Executor) ServerOptions() []grpc.ServerOption {
	opts := append(x.securityOptions(),
		grpc.MaxSendMsgSize(x.cfg.MaxResponseBytes+1<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, MaxConnectionIdle: x.cfg.IdleConnTimeout}),
	)
	return append(opts, x.cfg.ServerOptions...)
}

// InFlight returns the number of units (statements, transactions, calls)
// running now.
func (x *Executor) InFlight() int64 { return x.inFlight.Load() }

// OpenTransactions returns the number of forwarded transactions holding a
// primary connection now.
func (x *Executor) OpenTransactions() int64 { return x.openTx.Load() }

// Serve runs a gRPC server with the executor's services on lis until Close
// (then it returns nil) or a listener error. It refuses a non-loopback
// address when the executor does not authenticate clients.
func (x *Executor) Serve(lis net.Listener) error {
	if x.keys == nil && !isLoopback(lis.Addr()) {
		return fmt.Errorf("forward: executor: refusing to serve unauthenticated on %s: set a Secret", lis.Addr())
	}
	s := grpc.NewServer(x.ServerOptions()...)
	x.Register(s)
	x.mu.Lock()
	select {
	case <-x.stop:
		x.mu.Unlock()
		return errors.New("forward: executor closed")
	default:
	}
	x.servers = append(x.servers, s)
	x.mu.Unlock()
	err := s.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.Network() == "unix" || a.Network() == "bufconn"
	}
	return tcp.IP.IsLoopback()
}

// Close stops the servers started by Serve (open transactions are rolled
// back as their streams end), the health checker and, if the executor
// opened it, the pool.
func (x *Executor) Close() error {
	x.closeOnce.Do(func() {
		x.mu.Lock()
		close(x.stop)
		servers := x.servers
		x.mu.Unlock()
		for _, s := range servers {
			stopped := make(chan struct{})
			go func() { s.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				s.Stop()
				<-stopped
			}
		}
		x.health.Shutdown()
		x.wg.Wait()
		if x.ownPool {
			x.pool.Close()
		}
	})
	return nil
}

// checkHealth keeps the health service's status in step with the primary:
// SERVING only while it answers and is not in recovery. On the same tick it
// lets the ledger drop expired entries, so that an idle executor gives
// their memory back.
func (x *Executor) checkHealth(last healthpb.HealthCheckResponse_ServingStatus) {
	defer x.wg.Done()
	t := time.NewTicker(x.cfg.HealthInterval)
	defer t.Stop()
	answered := time.Now() // the last probe that got an answer
	for {
		select {
		case <-t.C:
		case <-x.stop:
			return
		}
		st, err := x.probe()
		if err == nil {
			answered = time.Now()
		} else if x.slowNotDown(err, answered) {
			st = last
		}
		if st != last {
			x.health.SetServingStatus("", st)
			x.health.SetServingStatus(forwardpb.Executor_ServiceDesc.ServiceName, st)
			last = st
		}
		x.ledger.expire(time.Now())
	}
}

// slowNotDown reports whether a probe that failed with err, the last
// answer having come at answered, says the executor is busy rather than
// its primary gone: clients balancing over executors by health (see
// candidates.go) must not leave a saturated one. A probe that timed out
// while every pooled connection is in use (the primary is answering
// them), or within a few intervals of the last answer (a loaded machine),
// keeps the status; a refused connection does not.
func (x *Executor) slowNotDown(err error, answered time.Time) bool {
	if !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if s := x.pool.Stat(); s.AcquiredConns() >= s.MaxConns() {
		return true
	}
	return time.Since(answered) < 3*x.cfg.HealthInterval
}

func (x *Executor) probe() (healthpb.HealthCheckResponse_ServingStatus, error) {
	if x.pool == nil {
		// A call-only node is healthy as long as it runs.
		return healthpb.HealthCheckResponse_SERVING, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), x.cfg.HealthInterval)
	defer cancel()
	var (
		inRecovery bool
		sys        int64
		db         string
	)
	// On an acquired connection: pgxpool's own QueryRow keeps each result
	// referenced from a per-connection batch for a long while.
	err := func() error {
		c, err := x.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer c.Release()
		return c.Conn().QueryRow(ctx, `SELECT pg_is_in_recovery(), `+protocol.IdentityColumns).Scan(&inRecovery, &sys, &db)
	}()
	if err != nil {
		x.log.Warn("forward: executor: primary unreachable", "err", err)
		return healthpb.HealthCheckResponse_NOT_SERVING, err
	}
	x.ident.Store(&protocol.Identity{SystemIdentifier: uint64(sys), Database: db})
	if inRecovery {
		x.log.Warn("forward: executor: database is in recovery (a replica), not a primary")
		return healthpb.HealthCheckResponse_NOT_SERVING, nil
	}
	return healthpb.HealthCheckResponse_SERVING, nil
}

// acquireSlot waits for a unit slot (and, for a transaction, first for a
// transaction slot) until shortly before ctx's deadline, or QueueTimeout.
func (x *Executor) acquireSlot(ctx context.Context, tx bool) error {
	if tx {
		if err := x.waitSlot(ctx, x.txSlots); err != nil {
			return err
		}
	}
	if err := x.waitSlot(ctx, x.slots); err != nil {
		if tx {
			<-x.txSlots
		}
		return err
	}
	x.inFlight.Add(1)
	return nil
}

func (x *Executor) waitSlot(ctx context.Context, slots chan struct{}) error {
	select {
	case slots <- struct{}{}:
		return nil
	default:
	}
	wait, limited := x.cfg.QueueTimeout, x.cfg.QueueTimeout > 0
	if d, ok := ctx.Deadline(); ok {
		// Leave the answer time to reach the client before its deadline
		// (the executor's deadline runs a transit later than the client's).
		left := time.Until(d)
		left -= min(left/5, time.Second)
		if !limited || left < wait {
			wait = left
		}
		limited = true
	}
	var expired <-chan time.Time
	if limited {
		t := time.NewTimer(max(wait, 0))
		defer t.Stop()
		expired = t.C
	}
	select {
	case slots <- struct{}{}:
		return nil
	case <-expired:
		return errBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (x *Executor) releaseSlot(tx bool) {
	x.inFlight.Add(-1)
	<-x.slots
	if tx {
		<-x.txSlots
	}
}

var errBusy = errors.New("executor busy")
