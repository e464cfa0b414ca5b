package forward_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
)

// A primary-region executor and a replica-region client, in one process for
// the example. In a deployment the executor runs next to the primary and
// the client's Target names it (for Fly.io: dns:///<region>.<app>.internal).
func Example() {
	ctx := context.Background()
	const secret = "a-long-random-shared-secret"
	primaryDSN := "postgres://postgres@127.0.0.1:5432/postgres"

	x, err := executor.New(ctx, executor.Config{DSN: primaryDSN, Secret: secret})
	if err != nil {
		log.Fatal(err)
	}
	defer x.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go x.Serve(lis)

	c, err := forward.NewClient(forward.ClientConfig{Target: lis.Addr().String(), Secret: secret})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	db := c.OpenDB()
	defer db.Close()

	// The receipt collects the commit LSN, to wait for on a replica.
	wctx, rcpt := forward.WithReceipt(ctx)
	if _, err := db.ExecContext(wctx, `INSERT INTO events (name) VALUES ($1)`, "signup"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("committed at", rcpt.LSN())
}
