// Command flypg-executor runs flypg's executor as a process of its own, for
// deployments that would rather not embed it in the application (or that
// forward from apps in several languages): it serves SQL forwarding on the
// primary over gRPC, to clients holding the shared secret (mutual TLS keyed
// from it).
//
//	FLYPG_SECRET=... FLYPG_PRIMARY_DSN=postgres://...@primary:5432/app flypg-executor -listen :5480
//
// Secrets come from the environment only, never from the command line,
// which every user of the machine can read (ps, /proc):
//
//	FLYPG_SECRET        the shared secret (at least 16 random bytes)
//	FLYPG_OLD_SECRETS   older secrets still accepted during a rotation, comma-separated
//	FLYPG_PRIMARY_DSN   the primary's connection string (else DATABASE_URL)
//
// The -dsn flag exists for connection strings without a password.
//
// The application's functions registered with flypg.Register are not
// available here; calling them needs the application's own executor
// (Plugin.Start, Serve or RegisterGRPC). Functions of one SQL statement can be served instead
// (-function name=SQL: the call's payload is $1, the first column of the
// first row is the output).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/internal/secret"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flypg-executor:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		listen   = flag.String("listen", ":5480", "address to serve gRPC on")
		dsnFlag  = flag.String("dsn", "", "connection string of the primary, instead of $FLYPG_PRIMARY_DSN or $DATABASE_URL; visible to every local user, so only for one without a password")
		stmt     = flag.Duration("statement-timeout", 0, "statement_timeout for forwarded statements (0: the server's)")
		maxConc  = flag.Int("max-concurrent", 0, "units run at once (0: the pool's size)")
		maxConns = flag.Int("max-connections", 0, fmt.Sprintf("connections held at once; more are closed (0: %d)", executor.DefaultMaxConnections))
		insecure = flag.Bool("insecure", false, "serve without a secret (loopback only)")
		debug    = flag.Bool("debug", false, "log each unit")
		durable  = flag.Bool("durable-dedup", os.Getenv("FLYPG_DURABLE_DEDUP") == "true", "record committed request IDs on the primary, for exactly-once across restarts and instances (default $FLYPG_DURABLE_DEDUP)")
		window   = flag.Duration("dedup-window", 0, fmt.Sprintf("how long answers are kept for retries (0: %v; at least %v)", executor.DefaultDedupWindow, executor.MinDedupWindow))
		debugAt  = flag.String("debug-addr", "", "serve Go's profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060")
		funcs    = functionFlags{}
	)
	flag.Var(funcs, "function", "serve Call of a function defined as one SQL statement: name=SQL, $1 the payload (repeatable)")
	flag.Parse()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dsn, source := primaryDSN(*dsnFlag)
	if dsn == "" {
		return errors.New("no primary: set FLYPG_PRIMARY_DSN or DATABASE_URL")
	}
	if source == "-dsn" && strings.Contains(secret.RedactDSN(dsn), secret.Mask) {
		log.Warn("flypg-executor: the -dsn flag carries a password, which every user of this machine can read; set FLYPG_PRIMARY_DSN instead")
	}
	log.Info("flypg-executor: primary", "from", source, "dsn", secret.RedactDSN(dsn))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *debugAt != "" {
		stopDebug, err := serveDebug(ctx, *debugAt, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	var calls executor.CallHandler
	if len(funcs) > 0 {
		pc, err := executor.PoolConfig(dsn)
		if err != nil {
			return err
		}
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return err
		}
		defer pool.Close()
		calls = &sqlFunctions{pool: pool, funcs: funcs}
	}
	x, err := executor.New(ctx, executor.Config{
		Calls:                calls,
		DedupWindow:          *window,
		DSN:                  dsn,
		Secret:               os.Getenv("FLYPG_SECRET"),
		OldSecrets:           secret.SplitList(os.Getenv("FLYPG_OLD_SECRETS")),
		AllowUnauthenticated: *insecure,
		StatementTimeout:     *stmt,
		MaxConcurrent:        *maxConc,
		MaxConnections:       *maxConns,
		DurableDedup:         *durable,
		Logger:               log,
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		x.Close()
		return err
	}
	log.Info("flypg-executor: serving", "addr", lis.Addr().String(), "instance", x.Instance())
	served := make(chan error, 1)
	go func() { served <- x.Serve(lis) }()
	select {
	case <-ctx.Done():
		log.Info("flypg-executor: shutting down; open transactions roll back")
		done := make(chan struct{})
		go func() { x.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return errors.New("shutdown timed out")
		}
		return <-served
	case err := <-served:
		x.Close()
		return err
	}
}

// primaryDSN returns the primary's connection string and where it came
// from: the -dsn flag, else the first of the environment variables set.
func primaryDSN(flagValue string) (dsn, source string) {
	if flagValue != "" {
		return flagValue, "-dsn"
	}
	for _, n := range []string{"FLYPG_PRIMARY_DSN", "DATABASE_URL"} {
		if v := os.Getenv(n); v != "" {
			return v, "$" + n
		}
	}
	return "", ""
}
