// Command flypg-executor runs flypg's executor as a process of its own, for
// deployments that would rather not embed it in the application (or that
// forward from apps in several languages): it serves SQL forwarding on the
// primary over gRPC, authenticated with the shared secret.
//
//	FLYPG_SECRET=... flypg-executor -dsn postgres://...@primary:5432/app -listen :5480
//
// The application's functions registered with flypg.Register are not
// available here; flypg.Call needs the application's own executor
// (Plugin.Serve). Functions of one SQL statement can be served instead
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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flypg/flypg/forward"
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
		dsn      = flag.String("dsn", firstEnv("FLYPG_PRIMARY_DSN", "DATABASE_URL"), "connection string of the primary (default $FLYPG_PRIMARY_DSN, then $DATABASE_URL)")
		stmt     = flag.Duration("statement-timeout", 0, "statement_timeout for forwarded statements (0: the server's)")
		maxConc  = flag.Int("max-concurrent", 0, "units run at once (0: the pool's size)")
		insecure = flag.Bool("insecure", false, "serve without a secret (loopback only)")
		debug    = flag.Bool("debug", false, "log each unit")
		durable  = flag.Bool("durable-dedup", os.Getenv("FLYPG_DURABLE_DEDUP") == "true", "record committed request IDs on the primary, for exactly-once across restarts and instances (default $FLYPG_DURABLE_DEDUP)")
		window   = flag.Duration("dedup-window", 0, fmt.Sprintf("how long answers are kept for retries (0: %v; at least %v)", forward.DefaultDedupWindow, forward.MinDedupWindow))
		debugAt  = flag.String("debug-addr", "", "serve Go's profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060")
		funcs    = functionFlags{}
	)
	flag.Var(funcs, "function", "serve Call of a function defined as one SQL statement: name=SQL, $1 the payload (repeatable)")
	flag.Parse()
	if *dsn == "" {
		return errors.New("no primary: set -dsn, FLYPG_PRIMARY_DSN or DATABASE_URL")
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *debugAt != "" {
		stopDebug, err := serveDebug(ctx, *debugAt, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	var calls forward.CallHandler
	if len(funcs) > 0 {
		pc, err := forward.PoolConfig(*dsn)
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
	x, err := forward.NewExecutor(ctx, forward.ExecutorConfig{
		Calls:                calls,
		DedupWindow:          *window,
		DSN:                  *dsn,
		Secret:               os.Getenv("FLYPG_SECRET"),
		AllowUnauthenticated: *insecure,
		StatementTimeout:     *stmt,
		MaxConcurrent:        *maxConc,
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

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
