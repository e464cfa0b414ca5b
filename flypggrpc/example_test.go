package flypggrpc_test

import (
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/flypg/flypg/flypggrpc"
)

// Both sides of a service-to-service call: the client sends its context's
// bookmark and merges the one the server returns; the server runs each call
// under the bookmark it received.
func Example() {
	conn, err := grpc.NewClient("orders.internal:9000",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(flypggrpc.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(flypggrpc.StreamClientInterceptor()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(flypggrpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(flypggrpc.StreamServerInterceptor()))
	_ = srv // register services, then srv.Serve(lis)
}
