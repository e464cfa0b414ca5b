package pgtest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/flypg/flypg/pgtest"
	"github.com/jackc/pgx/v5"
)

// A primary in one region and a replica 80ms away: a write on the primary
// becomes visible on the replica once replication has crossed the link.
func Example() {
	ctx := context.Background()
	c, err := pgtest.Start(ctx, pgtest.Options{
		Replicas:         1,
		ReplicationLinks: true,
		Logf:             log.Printf,
	})
	if err != nil {
		log.Fatal(err) // errors.Is(err, pgtest.ErrNoPostgres) when PostgreSQL is not installed
	}
	defer c.Close()

	if err := c.ReplicationLink(0).SetRTT(80 * time.Millisecond); err != nil {
		log.Fatal(err)
	}

	primary, err := pgx.Connect(ctx, c.Primary.DSN(""))
	if err != nil {
		log.Fatal(err)
	}
	defer primary.Close(ctx)
	if _, err := primary.Exec(ctx, "CREATE TABLE greetings (msg text); INSERT INTO greetings VALUES ('hello')"); err != nil {
		log.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		log.Fatal(err)
	}

	replica, err := pgx.Connect(ctx, c.Replicas[0].DSN(""))
	if err != nil {
		log.Fatal(err)
	}
	defer replica.Close(ctx)
	var msg string
	if err := replica.QueryRow(ctx, "SELECT msg FROM greetings").Scan(&msg); err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg)

	// Cut the replica off, as if its region lost its network.
	if err := c.ReplicationLink(0).Cut(); err != nil {
		log.Fatal(err)
	}
}
