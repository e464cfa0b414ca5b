// Command demo shows flypg at work on one machine: a to-do list app
// deployed in three simulated regions, with the PostgreSQL primary in one
// and a streaming replica in each of the others, near and far. Its page at
// / writes in one region and reads in another, with and without a
// bookmark.
//
//	go run ./examples/demo               # serve on http://127.0.0.1:8080 until Ctrl-C
//	go run ./examples/demo -rtt 150ms    # put the regions further apart
//	go run ./examples/demo -selftest     # scripted session against itself, then exit
//
// It starts a throw-away PostgreSQL primary and replica from the machine's
// PostgreSQL binaries (Debian: apt-get install postgresql) and removes them
// on exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flypg/flypg/pgtest"
)

// options are the command-line flags.
type options struct {
	addr     string
	rtt      time.Duration
	nearRTT  time.Duration
	selftest bool
	verbose  bool
}

func main() {
	var o options
	port := flag.Int("port", 8080, "HTTP port of the replica-region app, on 127.0.0.1")
	flag.StringVar(&o.addr, "addr", "", "HTTP listen address of the replica-region app, e.g. :8080 (overrides -port)")
	flag.DurationVar(&o.rtt, "rtt", 40*time.Millisecond, "simulated round-trip time between the primary region and the far replica region (syd), on both cross-region links (app → executor, primary → replica)")
	flag.DurationVar(&o.nearRTT, "near-rtt", 10*time.Millisecond, "the same for the near replica region (ams)")
	flag.BoolVar(&o.selftest, "selftest", false, "run a scripted HTTP session against the app on a free port, then exit: 0 on success")
	flag.BoolVar(&o.verbose, "v", false, "log flypg's routing decisions and PostgreSQL start-up to stderr")
	flag.Parse()
	if o.addr == "" {
		o.addr = fmt.Sprintf("127.0.0.1:%d", *port)
	}
	if o.rtt < 0 || o.nearRTT < 0 {
		fmt.Fprintln(os.Stderr, "demo: -rtt and -near-rtt must not be negative")
		os.Exit(2)
	}

	// Ctrl-C (SIGINT) or SIGTERM cancels ctx; run then shuts everything
	// down. PostgreSQL runs in its own process group, so the terminal's
	// SIGINT reaches this process only, and run stops the servers itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		if errors.Is(err, pgtest.ErrNoPostgres) {
			fmt.Fprintln(os.Stderr, "demo: as root, scripts/ensure-postgres.sh installs it")
		}
		os.Exit(1)
	}
}
