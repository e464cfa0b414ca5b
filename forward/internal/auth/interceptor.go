package auth

import (
	"context"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor verifies every unary call on the server it is
// installed on. Do not combine it with direct Verify calls for the same
// RPC: the second Verify would see the nonce as replayed.
func (v *Verifier) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := v.Verify(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor verifies every streaming call, once, when the
// stream opens. The same caveat as for UnaryServerInterceptor applies.
func (v *Verifier) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := v.Verify(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
