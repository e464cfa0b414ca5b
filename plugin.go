package flypg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/internal/secret"
	"github.com/flypg/flypg/lsn"
)

// PluginName is the name the plugin registers under in a *gorm.DB.
const PluginName = "flypg"

// Plugin is flypg's GORM plugin. Create it with New, install it with
// db.Use, and Close it when the application stops.
type Plugin struct {
	cfg     Config                       // as given, resolved in Initialize; its secrets cleared (see setConfig)
	secrets secret.Sealed[configSecrets] // cfg's secrets

	mu      sync.Mutex
	db      *gorm.DB
	local   *sql.DB
	primary bool // this node is in the primary region

	client *forward.Client // to the primary region's executor
	fwdDB  *sql.DB
	routed *sql.DB // Plugin.DB in a replica region
	// promotedAtStart: the local database of this replica region was not
	// in recovery when the plugin started (see Config.DisableFollowPromotion).
	promotedAtStart bool
	source          *lsn.ReplaySource
	tracker         *lsn.Tracker
	router          *callbacks.Router

	regions map[string]*forward.Client // named-region call targets
	funcs   map[string]callFunc

	executor   *executor.Executor
	walSegSize atomic.Uint64  // the primary's wal_segment_size, once read (Call in the primary region)
	serving    sync.WaitGroup // goroutines of Start
	closed     bool
	log        *slog.Logger
	tracers    tracers
	bm         bookmarkState
}

// New returns a plugin for cfg. Nothing is checked or connected until
// db.Use calls Initialize.
func New(cfg Config) *Plugin {
	p := &Plugin{regions: map[string]*forward.Client{}, funcs: map[string]callFunc{}}
	p.setConfig(cfg)
	return p
}

// configSecrets are the fields of Config that must never be printed.
type configSecrets struct {
	secret, primaryDSN string
	old                []string
}

// setConfig keeps cfg with its secrets sealed away, so that no printing
// of the plugin, whatever the verb or the struct holding it, shows them.
func (p *Plugin) setConfig(cfg Config) {
	p.secrets = secret.Seal(configSecrets{secret: cfg.Secret, primaryDSN: cfg.PrimaryDSN, old: cfg.OldSecrets})
	cfg.Secret, cfg.PrimaryDSN, cfg.OldSecrets = "", "", nil
	p.cfg = cfg
}

// config returns the configuration with its secrets.
func (p *Plugin) config() Config {
	cfg, s := p.cfg, p.secrets.Open()
	cfg.Secret, cfg.PrimaryDSN, cfg.OldSecrets = s.secret, s.primaryDSN, s.old
	return cfg
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return PluginName }

// Initialize implements gorm.Plugin: it checks the configuration and, in a
// replica region, connects to the primary region's executor, starts the
// replication tracker and installs the routing callbacks. In the primary
// region it installs one callback, which does nothing for a statement
// without a bookmark session (WithBookmark) in its context: no extra query
// per write.
func (p *Plugin) Initialize(db *gorm.DB) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db != nil {
		return errors.New("flypg: the plugin is already installed in a *gorm.DB; create one plugin per database")
	}
	if p.closed {
		return errors.New("flypg: the plugin is closed")
	}
	cfg, err := p.config().resolve()
	if err != nil {
		return err
	}
	tr, err := newTracers(cfg)
	if err != nil {
		return err
	}
	p.setConfig(cfg)
	p.tracers = tr
	p.log = cfg.Logger
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	local, err := db.DB()
	if err != nil {
		return fmt.Errorf("flypg: the *gorm.DB has no *sql.DB: %w", err)
	}
	p.db, p.local = db, local
	p.primary = cfg.Region == cfg.PrimaryRegion
	if p.primary {
		p.log.Info("flypg: primary region: statements run locally", "region", cfg.Region)
		return p.primarySessions(db)
	}
	if err := p.startReplica(db); err != nil {
		p.stopReplica()
		p.db, p.local = nil, nil
		return err
	}
	p.log.Info("flypg: replica region: writes are forwarded", "region", cfg.Region, "primary_region", cfg.PrimaryRegion, "executor", cfg.PrimaryAddr)
	return nil
}

func (p *Plugin) startReplica(db *gorm.DB) error {
	cfg := p.cfg
	id, err := p.replicaIdentity()
	if err != nil {
		return err
	}
	cc := p.clientConfig(cfg.PrimaryAddr)
	cc.Identity = &id
	cc.HealthChecked = cfg.ExecutorHealthCheck || strings.Contains(cfg.PrimaryAddr, ",")
	p.client, err = forward.NewClient(cc)
	if err != nil {
		return fmt.Errorf("flypg: executor client: %w", err)
	}
	p.fwdDB = p.client.OpenDB()
	// Forwarding connections cost nothing on the server until they run a
	// transaction; keep enough idle ones that a busy app does not churn.
	p.fwdDB.SetMaxIdleConns(64)
	p.source = lsn.NewReplaySource(p.local)
	router := &callbacks.Router{
		Local: db.Config.ConnPool, Forward: p.fwdDB, Logger: cfg.Logger,
		Sessions:       p.replicaSessions(id),
		Observe:        func(ctx context.Context, ev callbacks.Event) { p.tracers.write(ctx, event(ev)) },
		StartStatement: p.tracers.startStatement(),
		StartWait:      p.tracers.startWait(),
	}
	if err := p.availability(router); err != nil {
		return err
	}
	onLook := p.tracers.onLook()
	p.tracker, err = lsn.NewTracker(lsn.Config{Source: p.source, Timeout: cfg.AwaitTimeout, OnLook: func(l lsn.Look) {
		if onLook != nil {
			onLook(l)
		}
		router.Looked(l)
	}})
	if err != nil {
		return fmt.Errorf("flypg: tracker: %w", err)
	}
	router.Tracker = p.tracker
	p.router = router
	if err := p.router.Register(db); err != nil {
		return err
	}
	if p.promotedAtStart {
		router.LocalPromoted()
	}
	p.routed = p.router.OpenDB()
	// db.DB() returns a routed database of its own, which its caller owns
	// as with plain GORM: closing it closes the local pool.
	p.router.Routed = p.router.OpenOwningDB()
	return nil
}

// localCheckTimeout bounds the startup check of the local database.
const localCheckTimeout = 10 * time.Second

// replicaIdentity checks that the local database of a replica-region node
// is a replica (in recovery), and reads which database it replicates: every
// forwarded unit carries it, and an executor serving another database
// refuses them (forward.ErrDatabaseMismatch).
func (p *Plugin) replicaIdentity() (forward.Identity, error) {
	ctx, cancel := context.WithTimeout(context.Background(), localCheckTimeout)
	defer cancel()
	var inRecovery bool
	if err := p.local.QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		return forward.Identity{}, fmt.Errorf("flypg: check the local database: %w", err)
	}
	if !inRecovery && !p.cfg.DisableFollowPromotion && p.localWasPromoted(ctx) {
		// Promoted before this start (a failover chose it): follow the
		// database's decision, as a running node does.
		p.promotedAtStart = true
		if p.cfg.Logger != nil {
			p.cfg.Logger.Warn("flypg: the local database of this replica region is not a replica (promoted): writes run on it, nothing is forwarded", "region", p.cfg.Region, "primary_region", p.cfg.PrimaryRegion)
		}
	} else if !inRecovery {
		return forward.Identity{}, fmt.Errorf("flypg: region %q is not the primary region (%q), but its local database is not a replica (pg_is_in_recovery() is false): point GORM at the region's replica, or set PrimaryRegion to this region if this database is the primary", p.cfg.Region, p.cfg.PrimaryRegion)
	}
	id, err := forward.ReadIdentity(ctx, p.local)
	if err != nil {
		return forward.Identity{}, fmt.Errorf("flypg: %w", err)
	}
	return id, nil
}

// localWasPromoted reports whether the local database, a primary, was
// promoted from a replica: its timeline is past the first. A primary on
// its first timeline never was a replica, so a replica region pointing at
// it is a configuration mistake (GORM opened with the primary's DSN).
func (p *Plugin) localWasPromoted(ctx context.Context) bool {
	// The WAL file name starts with the current timeline; the control
	// file's lags until the first checkpoint after a promotion.
	var file string
	if err := p.local.QueryRowContext(ctx, `SELECT pg_walfile_name(pg_current_wal_lsn())`).Scan(&file); err != nil || len(file) < 8 {
		return false
	}
	tl, err := strconv.ParseUint(file[:8], 16, 32)
	return err == nil && tl > 1
}

// clientConfig is the forwarding client configuration for target, with
// the plugin's credentials, timeout and tracers.
func (p *Plugin) clientConfig(target string) forward.ClientConfig {
	cfg := p.config()
	return forward.ClientConfig{
		Target: target, Secret: cfg.Secret, OldSecrets: cfg.OldSecrets, TLS: cfg.TLS, Timeout: cfg.RPCTimeout, Logger: cfg.Logger,
		DialOptions:    p.tracers.dialOptions(),
		SessionHeaders: p.tracers.sessionHeaders(),
	}
}

func (p *Plugin) stopReplica() {
	if p.routed != nil {
		p.routed.Close()
	}
	if p.router != nil {
		p.router.Close()
	}
	if p.tracker != nil {
		p.tracker.Close()
	}
	if p.source != nil {
		p.source.Close()
	}
	if p.fwdDB != nil {
		p.fwdDB.Close()
	}
	if p.client != nil {
		p.client.Close()
	}
}

// Close stops the plugin: the executor it serves (open forwarded
// transactions roll back), its clients and its tracker. Statements after
// Close fail.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.executor != nil {
		p.executor.Close() // ends Serve, in Start's goroutines too
	}
	p.stopReplica()
	for _, c := range p.regions {
		c.Close()
	}
	p.mu.Unlock()
	p.serving.Wait()
	p.mu.Lock()
	return nil
}

// IsPrimary reports whether the plugin runs in the primary region.
func (p *Plugin) IsPrimary() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.primary
}

// Config returns the configuration in effect (after Initialize, with its
// defaults filled in).
func (p *Plugin) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.config()
}

// DB returns a *sql.DB for code that uses database/sql next to GORM (sqlc,
// hand-written repositories). It routes and waits like the plugin's GORM
// callbacks: in a replica region, reads run on the local replica, every
// Exec and every other statement runs on the primary and then waits until
// the local replica has replayed it, transactions are forwarded whole, and
// a held *sql.Conn pins one primary connection once a statement sets
// session state or a transaction begins (see callbacks.Router.OpenDB for
// the details). In the primary region it is the *gorm.DB's own *sql.DB.
// In a replica region db.DB() returns a routed *sql.DB too (one of its
// own, which closes the local pool when closed).
//
// The plugin owns it: do not Close it; Close closes it.
func (p *Plugin) DB() (*sql.DB, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return nil, errors.New("flypg: the plugin is closed")
	case p.db == nil:
		return nil, errors.New("flypg: DB before db.Use(plugin)")
	case p.primary:
		return p.local, nil
	}
	return p.routed, nil
}

// Tracker returns the replication tracker of a replica-region plugin, nil
// in the primary region.
func (p *Plugin) Tracker() *lsn.Tracker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tracker
}

// Serve serves the node's gRPC services on lis until Close: the executor
// (SQL forwarding, in the primary region only) and the registered
// functions (every region). Like http.Serve it blocks; it returns nil after
// Close.
func (p *Plugin) Serve(lis net.Listener) error {
	x, err := p.executorInstance()
	if err != nil {
		return err
	}
	return x.Serve(lis)
}

// Start serves the node's gRPC services on lis in the background, until
// Close. Unlike Serve it reports a configuration error (such as no
// connection string for the primary) at once; a later failure of the
// listener is logged.
func (p *Plugin) Start(lis net.Listener) error {
	x, err := p.executorInstance()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("flypg: the plugin is closed")
	}
	p.serving.Add(1)
	go func() {
		defer p.serving.Done()
		if err := x.Serve(lis); err != nil {
			p.log.Error("flypg: serving stopped", "addr", lis.Addr().String(), "err", err)
		}
	}()
	return nil
}

// RegisterGRPC adds the node's gRPC services to an application's own
// server. Build the server with the options of ServerOptions: they carry
// the TLS keyed from the secret, the authentication of every call before
// its messages are read, and the executor's limits. Without them, calls
// are still authenticated, only later (after their first message was
// read): a call must come over TLS keyed from the secret, or over the
// application's own TLS with an HMAC of the secret (Config.TLS on the
// calling side), or — without a secret — from a loopback address.
func (p *Plugin) RegisterGRPC(s grpc.ServiceRegistrar) error {
	x, err := p.executorInstance()
	if err != nil {
		return err
	}
	x.Register(s)
	return nil
}

// ServerOptions are the gRPC server options the node's services expect,
// for RegisterGRPC: the transport keyed from the secret, authentication of
// every call before its messages are read, the executor's limits and
// keepalive settings (see executor.Executor.ServerOptions).
func (p *Plugin) ServerOptions() ([]grpc.ServerOption, error) {
	x, err := p.executorInstance()
	if err != nil {
		return nil, err
	}
	return x.ServerOptions(), nil
}

// executorInstance creates the node's executor on first use.
func (p *Plugin) executorInstance() (*executor.Executor, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil {
		return nil, errors.New("flypg: Serve before db.Use(plugin)")
	}
	if p.closed {
		return nil, errors.New("flypg: the plugin is closed")
	}
	if p.executor != nil {
		return p.executor, nil
	}
	xc := p.cfg.Executor.executorConfig()
	xc.Calls = callHandler{p}
	s := p.secrets.Open()
	xc.Secret, xc.OldSecrets = s.secret, s.old
	xc.AllowUnauthenticated = p.cfg.Insecure && s.secret == ""
	xc.Logger = p.cfg.Logger
	xc.ServerOptions = p.tracers.serverOptions()
	xc.SessionUnit = p.tracers.sessionUnit()
	if p.primary {
		dsn := p.primaryDSN()
		if dsn == "" {
			return nil, errors.New("flypg: the executor needs a connection string for the primary: set Config.PrimaryDSN (or FLYPG_PRIMARY_DSN or DATABASE_URL), or open GORM with a DSN")
		}
		xc.DSN = dsn
	}
	x, err := executor.New(context.Background(), xc)
	if err != nil {
		return nil, err
	}
	if err := p.tracers.executor(x); err != nil {
		x.Close()
		return nil, err
	}
	p.executor = x
	return x, nil
}

func (p *Plugin) primaryDSN() string {
	if dsn := p.secrets.Open().primaryDSN; dsn != "" {
		return dsn
	}
	if d, ok := p.db.Dialector.(*postgres.Dialector); ok && d.Config != nil && d.Config.DSN != "" {
		return d.Config.DSN
	}
	return os.Getenv("DATABASE_URL")
}

// FromDB returns the plugin installed in db, if any.
func FromDB(db *gorm.DB) (*Plugin, bool) {
	if db == nil || db.Config == nil {
		return nil, false
	}
	pl, ok := db.Config.Plugins[PluginName]
	if !ok {
		return nil, false
	}
	p, ok := pl.(*Plugin)
	return p, ok
}

// Stats are counters of a plugin's forwarding.
type Stats struct {
	Forward   forward.ClientStats // round trips and units to the primary region's executor
	Tracker   lsn.Stats           // replication waits
	Reads     callbacks.ReadStats // reads run on the primary: replica unreachable, safety net
	Bookmarks BookmarkStats       // reads and writes under bookmarks
}

// Stats returns the plugin's counters; zero in the primary region.
func (p *Plugin) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s Stats
	if p.client != nil {
		s.Forward = p.client.Stats()
	}
	if p.tracker != nil {
		s.Tracker = p.tracker.Stats()
	}
	if p.router != nil {
		s.Reads = p.router.ReadStats()
	}
	s.Bookmarks = p.bookmarkStats()
	return s
}
