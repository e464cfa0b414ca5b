// Command pgtest runs a throw-away PostgreSQL primary with streaming
// replicas on this machine (package pgtest) until it is interrupted, for
// trying flypg's regions locally: a primary-region process connects to the
// primary, a replica-region process to a replica.
//
//	go run ./cmd/pgtest -env /tmp/flypg-regions.env
//
// Once the cluster is up it prints, and writes to the -env file, their
// connection strings as shell assignments (PRIMARY_URL, REPLICA_URL;
// REPLICA2_URL... for more replicas), then "ready". Ctrl-C stops every
// node and removes its directory. -replication-rtt delays replication as a
// distance between regions would. It needs PostgreSQL's server binaries
// (Debian: apt-get install postgresql); as root, the nodes run as the
// postgres user.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/flypg/flypg/pgtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		replicas = flag.Int("replicas", 1, "streaming replicas to start")
		rtt      = flag.Duration("replication-rtt", 0, "round-trip time added to each replica's replication connection, e.g. 40ms")
		envFile  = flag.String("env", "", "also write the connection strings to this file, for the shell's `.`")
	)
	flag.Parse()
	if *replicas < 1 {
		return fmt.Errorf("-replicas %d: at least one replica", *replicas)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := pgtest.Start(startCtx, pgtest.Options{
		Replicas:         *replicas,
		ReplicationLinks: *rtt > 0,
		Logf:             func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	if *rtt > 0 {
		for i := range c.Replicas {
			if err := c.ReplicationLink(i).SetRTT(*rtt); err != nil {
				return err
			}
		}
	}

	var env strings.Builder
	fmt.Fprintf(&env, "export PRIMARY_URL='%s'\n", c.Primary.DSN(""))
	for i, r := range c.Replicas {
		name := "REPLICA_URL"
		if i > 0 {
			name = fmt.Sprintf("REPLICA%d_URL", i+1)
		}
		fmt.Fprintf(&env, "export %s='%s'\n", name, r.DSN(""))
	}
	if *envFile != "" {
		if err := os.WriteFile(*envFile, []byte(env.String()), 0o600); err != nil {
			return err
		}
		defer os.Remove(*envFile)
	}
	fmt.Print(env.String())
	fmt.Println("ready: Ctrl-C stops the cluster and removes it")

	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "pgtest: stopping")
	return c.Close()
}
