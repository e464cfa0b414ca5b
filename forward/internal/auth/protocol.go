package auth

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ProtocolHeader is the gRPC metadata key naming the forwarding protocol
// version the client speaks.
const ProtocolHeader = "flypg-protocol"

// WithProtocol returns ctx with outgoing metadata declaring that the client
// speaks protocol version (e.g. "1"). Use it on every call's context.
func WithProtocol(ctx context.Context, version string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ProtocolHeader, version)
}

// CheckProtocol returns nil if the incoming call declares protocol want, and
// otherwise a codes.FailedPrecondition status error naming both versions.
//
// A missing header is rejected too: every flypg client sends it, so its
// absence means a client too old (or not flypg at all) to be trusted with
// the current message semantics, and saying so beats a confusing failure
// later.
func CheckProtocol(ctx context.Context, want string) error {
	vals := metadata.ValueFromIncomingContext(ctx, ProtocolHeader)
	switch {
	case len(vals) == 0:
		return status.Errorf(codes.FailedPrecondition,
			"flypg protocol: client sent no %s header; server speaks protocol %q", ProtocolHeader, want)
	case len(vals) > 1:
		return status.Errorf(codes.FailedPrecondition,
			"flypg protocol: client sent %d %s headers, want one; server speaks protocol %q", len(vals), ProtocolHeader, want)
	case vals[0] != want:
		return status.Errorf(codes.FailedPrecondition,
			"flypg protocol: client speaks protocol %s, server speaks protocol %q", quoteShort(vals[0]), want)
	}
	return nil
}
