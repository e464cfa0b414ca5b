package executor_test

import (
	"context"
	"log"
	"net"
	"os"

	"github.com/flypg/flypg/forward/executor"
)

// An executor next to the primary, serving the replica regions' clients
// (package forward) on the configured port until the process ends. An
// application serving gRPC already adds it to its own server instead:
// grpc.NewServer(x.ServerOptions()...), then x.Register(server).
func ExampleNew() {
	ctx := context.Background()
	x, err := executor.New(ctx, executor.Config{
		DSN:    os.Getenv("FLYPG_PRIMARY_DSN"),
		Secret: os.Getenv("FLYPG_SECRET"), // the same on every node
	})
	if err != nil {
		log.Fatal(err)
	}
	defer x.Close()
	lis, err := net.Listen("tcp", ":"+os.Getenv("FLYPG_PORT"))
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(x.Serve(lis))
}
