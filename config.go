package flypg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/secret"
)

// DefaultPort is the default of Config.Port (FLYPG_PORT): the gRPC port
// every node serves on and the port of the default executor address.
const DefaultPort = 5480

// Defaults for zero Config fields.
const (
	DefaultAwaitTimeout = 5 * time.Second
	// DefaultRPCTimeout is none: a forwarded statement lasts as long as
	// it runs on the primary, as on a direct connection (PostgreSQL's
	// statement_timeout is off by default too); the caller's deadline
	// bounds it, and keepalive finds a dead executor or link within
	// about 15 seconds.
	DefaultRPCTimeout time.Duration = 0
	// DefaultMaxReplicaLag: LiteFS answers 503 past 10 s of lag and GitLab
	// drops a replica past 60 s; flypg can read on the primary instead, so
	// it need not let a write wait long.
	DefaultMaxReplicaLag = 2 * time.Second
)

// Config configures a Plugin. The zero value is valid for local
// development: both regions are "local" and the plugin passes every
// statement through unchanged.
type Config struct {
	// Region is where this instance runs; default fly.Region()
	// (FLY_REGION, then MY_REGION, else "local").
	Region string
	// PrimaryRegion is where the primary database lives; default
	// fly.PrimaryRegion() (PRIMARY_REGION, else "local").
	PrimaryRegion string
	// AppName names the app for the default addresses
	// <region>.<app>.internal; default fly.AppName() (FLY_APP_NAME).
	AppName string
	// Port is the gRPC port of every node; default DefaultPort.
	Port int

	// PrimaryAddr is the executor's gRPC target, used from replica
	// regions. Default: dns:///<PrimaryRegion>.<AppName>.internal:<Port>,
	// which resolves to every instance in the primary region. It may name
	// candidates in several regions — a DNS name resolving to them (such
	// as dns:///global.<AppName>.internal:<Port>) or addresses separated
	// by commas — of which only executors reporting SERVING (their
	// database is the writable primary) get work: writes follow the
	// primary when it moves, without a restart.
	PrimaryAddr string
	// ExecutorHealthCheck gives units only to executors whose gRPC health
	// service reports SERVING (gRPC's health-checked round robin): set it
	// when PrimaryAddr is a DNS name resolving to executors in several
	// regions. It is always on when PrimaryAddr lists several addresses,
	// and off for a single target, where gRPC picks the first address: an
	// executor swamped by a burst can miss its health probe, and balancing
	// would then hold back units it would have served.
	ExecutorHealthCheck bool
	// Secret authenticates nodes to each other's executors; the same on
	// every node, at least 16 random bytes, stable across deploys. Nodes
	// talk mutual TLS keyed from it: no certificate to manage. Required to
	// forward and to serve, unless Insecure.
	Secret string
	// OldSecrets are accepted and offered besides Secret while a new
	// secret rolls out (see the README's Security section).
	OldSecrets []string
	// Insecure allows forwarding and serving without a secret, to and
	// from loopback only (checked for every call). For local development.
	Insecure bool
	// TLS, if set, replaces the TLS keyed from the secret on connections to
	// executors: for executors served with RegisterGRPC on a server with
	// your own certificate. Calls then carry an HMAC of Secret.
	TLS *tls.Config

	// PrimaryDSN is the connection string the executor uses to reach the
	// primary (primary region). Default: the GORM dialector's DSN, then
	// DATABASE_URL.
	PrimaryDSN string

	// AwaitTimeout bounds the wait for replication after a forwarded
	// write; default DefaultAwaitTimeout.
	AwaitTimeout time.Duration
	// RPCTimeout, if set, bounds one forwarded unit when the caller's
	// context has no earlier deadline; default DefaultRPCTimeout (none).
	RPCTimeout time.Duration
	// BookmarkWait bounds how long a read under a bookmark (WithBookmark)
	// waits for the local replica before it runs on the primary instead.
	// Zero: the measured time of a round trip to the primary region's
	// executor (100 ms until one was measured, at least 2 ms, at most
	// AwaitTimeout), so that the wait never costs more than the read on
	// the primary would.
	BookmarkWait time.Duration

	// DisableReplicaFallback turns off running reads on the primary while
	// the local replica cannot be reached. By default a read that cannot
	// reach it (connection refused or reset, shut down) runs on the
	// primary, later reads and read-only transactions too, and writes stop
	// waiting for it; a probe every ProbeInterval brings reads back once the
	// replica answers and has replayed everything this node wrote or read
	// on the primary meanwhile. With it set, such reads fail.
	DisableReplicaFallback bool
	// ProbeInterval is the pause between looks at an unreachable local
	// replica; default callbacks.DefaultProbeInterval (250ms).
	ProbeInterval time.Duration
	// DisableSafetyNet turns off the safety net: by default a statement
	// outside a transaction that the local replica refuses as read-only
	// (SQLSTATE 25006, or 0A000 for temporary and unlogged relations) —
	// a write the routing rules missed, such as SELECT my_writing_fn() —
	// runs once on the primary and waits as a write does, and its shape is
	// logged once at warning level. With it set, the replica's error is
	// returned.
	DisableSafetyNet bool
	// DisableFollowPromotion keeps forwarding writes after the local
	// database of a replica region was promoted. By default, once it is
	// seen out of recovery (by the tracker, by the probe, or checked when
	// the executor cannot be reached), writes and transactions run on it
	// and nothing waits for replication: the node follows the database's
	// own failover decision without a restart.
	DisableFollowPromotion bool
	// MaxReplicaLag bounds how far behind the local replica may fall:
	// a write that waits longer than this for it stops waiting, and reads
	// run on the primary until the replica has replayed everything this
	// node wrote or read there meanwhile. Default DefaultMaxReplicaLag,
	// below AwaitTimeout, so that a stalled replica costs a write this
	// long rather than a replication timeout; negative turns it off.
	MaxReplicaLag time.Duration
	// MaxReplicaLagBytes, if positive, also moves reads to the primary
	// when a look of the tracker finds the replica more than this many WAL
	// bytes behind the newest write this node waited for. Default 0: off.
	MaxReplicaLagBytes uint64

	// Executor holds the limits of the executor this node serves (primary
	// region).
	Executor ExecutorConfig

	// Logger receives flypg's logs: quiet at info level, each routing
	// decision at debug level. Nil: silent.
	Logger *slog.Logger

	// OnWrite, if set, is called after every forwarded write (statement,
	// transaction commit, call) with the write's context — the caller's
	// request — and what it cost: time forwarded, time waiting for
	// replication, round trips. It runs on the caller's goroutine and must
	// not block. (It is the simplest WriteTracer.)
	OnWrite func(context.Context, WriteEvent)

	// Tracers observe the plugin: each implements one or more of
	// WriteTracer, StatementTracer, WaitTracer, CallTracer, ReplayTracer,
	// GRPCTracer, SessionTracer and ExecutorTracer (db.Use reports one
	// that implements none). flypgprom.New gives Prometheus metrics,
	// flypgotel.New OpenTelemetry traces across regions.
	Tracers []any

	envErr error // a malformed variable seen by ConfigFromEnv
}

// ConfigFromEnv reads a Config from the environment: fly's region
// variables (FLY_REGION, MY_REGION, PRIMARY_REGION, FLY_APP_NAME) and
// flypg's own:
//
//	FLYPG_SECRET          Secret
//	FLYPG_OLD_SECRETS     OldSecrets (comma-separated)
//	FLYPG_PRIMARY_ADDR    PrimaryAddr
//	FLYPG_PORT            Port
//	FLYPG_PRIMARY_DSN     PrimaryDSN (else DATABASE_URL, at use)
//	FLYPG_AWAIT_TIMEOUT   AwaitTimeout (a Go duration, e.g. 5s)
//	FLYPG_RPC_TIMEOUT     RPCTimeout
//	FLYPG_MAX_REPLICA_LAG MaxReplicaLag
//	FLYPG_BOOKMARK_WAIT   BookmarkWait
//	FLYPG_INSECURE        Insecure ("true")
//	FLYPG_DURABLE_DEDUP   Executor.DurableDedup ("true")
//
// Malformed values are reported by New's Initialize, not ignored.
func ConfigFromEnv() Config {
	c := Config{
		Region:        fly.Region(),
		PrimaryRegion: fly.PrimaryRegion(),
		AppName:       fly.AppName(),
		Secret:        os.Getenv("FLYPG_SECRET"),
		PrimaryAddr:   os.Getenv("FLYPG_PRIMARY_ADDR"),
		PrimaryDSN:    os.Getenv("FLYPG_PRIMARY_DSN"),
		Insecure:      os.Getenv("FLYPG_INSECURE") == "true",
		OldSecrets:    secret.SplitList(os.Getenv("FLYPG_OLD_SECRETS")),
	}
	c.Executor.DurableDedup = os.Getenv("FLYPG_DURABLE_DEDUP") == "true"
	var errs []error
	if v := os.Getenv("FLYPG_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("FLYPG_PORT=%q: %w", v, err))
		}
		c.Port = p
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{"FLYPG_AWAIT_TIMEOUT", &c.AwaitTimeout}, {"FLYPG_RPC_TIMEOUT", &c.RPCTimeout}, {"FLYPG_MAX_REPLICA_LAG", &c.MaxReplicaLag}, {"FLYPG_BOOKMARK_WAIT", &c.BookmarkWait}} {
		if v := os.Getenv(d.env); v != "" {
			t, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", d.env, v, err))
			}
			*d.dst = t
		}
	}
	if len(errs) > 0 {
		c.envErr = errors.Join(errs...)
	}
	return c
}

// resolve fills defaults and checks the configuration.
func (c Config) resolve() (Config, error) {
	if c.envErr != nil {
		return c, fmt.Errorf("flypg: config from environment: %w", c.envErr)
	}
	if c.Region == "" {
		c.Region = fly.Region()
	}
	if c.PrimaryRegion == "" {
		c.PrimaryRegion = fly.PrimaryRegion()
	}
	if c.AppName == "" {
		c.AppName = fly.AppName()
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.AwaitTimeout == 0 {
		c.AwaitTimeout = DefaultAwaitTimeout
	}
	if c.MaxReplicaLag == 0 {
		c.MaxReplicaLag = DefaultMaxReplicaLag
	}
	for _, r := range []struct{ name, v string }{{"Region", c.Region}, {"PrimaryRegion", c.PrimaryRegion}} {
		if !validRegion(r.v) {
			return c, fmt.Errorf("flypg: config: %s %q is not a region name (letters, digits, '-' and '_', at most 63)", r.name, r.v)
		}
	}
	if c.Port < 1 || c.Port > 65535 {
		return c, fmt.Errorf("flypg: config: Port %d out of range", c.Port)
	}
	if c.AwaitTimeout < 0 || c.RPCTimeout < 0 || c.ProbeInterval < 0 || c.BookmarkWait < 0 {
		return c, errors.New("flypg: config: negative AwaitTimeout, RPCTimeout, ProbeInterval or BookmarkWait")
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		return c, fmt.Errorf("flypg: config: Secret is %d bytes; use at least 16 random bytes", len(c.Secret))
	}
	for i, s := range c.OldSecrets {
		if len(s) < 16 {
			return c, fmt.Errorf("flypg: config: OldSecrets[%d] is %d bytes; use at least 16 random bytes", i, len(s))
		}
	}
	if len(c.OldSecrets) > 0 && c.Secret == "" {
		return c, errors.New("flypg: config: OldSecrets without a Secret")
	}
	if c.Region != c.PrimaryRegion {
		if c.PrimaryAddr == "" {
			if c.AppName == "" {
				return c, fmt.Errorf("flypg: config: region %q is not the primary region %q, so writes are forwarded, but neither PrimaryAddr nor AppName (FLY_APP_NAME) says where the primary region's executor is", c.Region, c.PrimaryRegion)
			}
			c.PrimaryAddr = c.regionAddr(c.PrimaryRegion)
		}
		if c.Secret == "" && !c.Insecure {
			return c, fmt.Errorf("flypg: config: region %q forwards writes to the primary region %q, which needs a Secret (FLYPG_SECRET) shared by every node", c.Region, c.PrimaryRegion)
		}
	}
	return c, nil
}

// regionAddr is the default gRPC target of a region's instances.
func (c Config) regionAddr(region string) string {
	return fmt.Sprintf("dns:///%s.%s.internal:%d", region, c.AppName, c.Port)
}

func validRegion(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
