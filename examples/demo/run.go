package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// run starts the deployment and the HTTP app, then serves until ctx ends
// (or runs the self-test), and stops everything it started.
func run(ctx context.Context, o options) (err error) {
	addr := o.addr
	if o.selftest {
		addr = "127.0.0.1:0" // never collide with a demo already running
	}
	// Listen first: a busy port fails in milliseconds, not after the
	// cluster's start-up.
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for HTTP: %w", err)
	}
	defer lis.Close() // the server closes it too; a second Close is harmless

	logger := slog.New(slog.DiscardHandler)
	var logf func(string, ...any)
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		logf = log.New(os.Stderr, "pgtest: ", log.Ltime).Printf
	}

	fmt.Printf("Starting a PostgreSQL primary (%s) and streaming replicas (%s, %s) on this machine...\n", primaryRegion, nearRegion, replicaRegion)
	start := time.Now()
	m := newMeter(os.Stdout, replicaRegion)
	regs, err := startRegions(ctx, regionsConfig{rtt: o.rtt, nearRTT: o.nearRTT, onWrite: m.onWrite, logger: logger, logf: logf})
	if err != nil && ctx.Err() != nil {
		// Ctrl-C during start-up: the details (a killed initdb...) are
		// noise; startRegions cleaned up.
		return errors.New("interrupted during start-up")
	}
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("Stopping: app instances, links, PostgreSQL...")
		if cerr := regs.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("shut down: %w", cerr))
			return
		}
		fmt.Println("Stopped; nothing left behind.")
	}()

	if err := m.countReads(regs.replica.db); err != nil {
		return err
	}
	a := &app{db: regs.replica.db, log: errorLogger()}
	srv := &http.Server{
		Handler:           m.wrap(handler(regs, a)),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(os.Stderr, "http: ", 0),
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(lis) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if serr := srv.Shutdown(sctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop HTTP: %w", serr))
		}
		if serr := <-httpDone; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, fmt.Errorf("HTTP: %w", serr))
		}
	}()

	base := "http://" + displayAddr(lis.Addr())
	printBanner(os.Stdout, regs, base, o, time.Since(start))

	if o.selftest {
		return selftest(ctx, base, regs)
	}
	select {
	case <-ctx.Done():
		fmt.Println()
		return nil
	case err := <-httpDone:
		httpDone <- err // for the deferred shutdown
		return fmt.Errorf("HTTP server stopped: %w", err)
	case <-regs.served:
		return fmt.Errorf("the %s executor stopped: %v", primaryRegion, regs.serveErr)
	}
}

// handler is the demo's whole HTTP surface: the page at /, its requests
// to the three regions under /regions/, the JSON index of the to-do API
// at /api, and the API itself (served by the syd instance).
func handler(regs *regions, a *app) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", a.routes())
	mux.HandleFunc("GET /{$}", servePage)
	mux.HandleFunc("GET /api", a.index)
	mux.Handle("/regions/", regionRoutes(regs, a.log))
	return mux
}

// errorLogger logs the app's unexpected errors to stderr.
func errorLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// displayAddr is a listen address as a URL host: "localhost" for the
// unspecified address.
func displayAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	return fmt.Sprintf("localhost:%d", tcp.Port)
}

// printBanner explains the set-up to someone seeing the demo for the first
// time.
func printBanner(w io.Writer, r *regions, base string, o options, took time.Duration) {
	rtt := o.rtt.String()
	b := &strings.Builder{}
	fmt.Fprintf(b, "Ready in %.1fs. One app, three regions, simulated on this machine:\n\n", took.Seconds())
	fmt.Fprintf(b, "  %s  primary region   PostgreSQL primary at %s\n", primaryRegion, r.cluster.Primary.Addr())
	fmt.Fprintf(b, "                        app instance: writes run here; serves the flypg executor at %s\n", r.executorAddr)
	fmt.Fprintf(b, "  %s  replica region   PostgreSQL streaming replica at %s, fed from %s over a %s RTT link\n", replicaRegion, r.cluster.Replicas[0].Addr(), primaryRegion, rtt)
	fmt.Fprintf(b, "                        app instance: HTTP API at %s, reads from the local replica,\n", base)
	fmt.Fprintf(b, "                        forwards writes to %s's executor over a %s RTT link (%s)\n", primaryRegion, rtt, r.executorLink.Addr())
	fmt.Fprintf(b, "  %s  replica region   PostgreSQL streaming replica at %s over a %s RTT link; app instance\n", nearRegion, r.cluster.Replicas[1].Addr(), r.nearRTT)
	fmt.Fprintf(b, "                        reachable from the page\n\n")
	fmt.Fprintf(b, "Open %s/ in a browser: write in one region, read in another at once, with and\n", base)
	fmt.Fprintf(b, "without the bookmark (Flypg-Bookmark header), and see where each request ran.\n\n")
	fmt.Fprintf(b, "Each request prints one line: reads are served by %s's replica; writes are forwarded\n", replicaRegion)
	fmt.Fprintf(b, "to %s, then the request waits until %s's replica has replayed them, so the next read\n", primaryRegion, replicaRegion)
	fmt.Fprintf(b, "sees them (read-your-writes). Change the distance with -rtt, e.g. -rtt 150ms.\n\n")
	if !o.selftest {
		fmt.Fprintf(b, "Or try the to-do API (GET %s/api lists every endpoint):\n", base)
		for _, c := range []string{
			`-X POST %s/lists -d '{"name":"Groceries"}'`,
			`-X POST %s/lists/1/items -d '{"title":"milk"}'`,
			`%s/lists/1`,
			`-X PATCH %s/items/1 -d '{"done":true}'`,
			`-X POST %s/lists -d '{"name":"Done"}'`,
			`-X POST %s/items/1/move -d '{"list_id":2}'`,
			`%s/lists`,
			`-X DELETE %s/lists/1`,
		} {
			fmt.Fprintf(b, "  curl -s "+c+"\n", base)
		}
		fmt.Fprintf(b, "\nPress Ctrl-C to stop.\n\n")
	}
	io.WriteString(w, b.String())
}
