// Package flypggrpc carries flypg bookmarks between services over gRPC:
// a client interceptor sends the caller's bookmark (flypg.BookmarkFrom)
// with each call and takes back the one the server's writes produced; a
// server interceptor runs each call under the bookmark it received
// (flypg.WithBookmark) and returns the bookmark of its writes in the
// trailer. Both use the metadata key "flypg-bookmark".
//
//	grpc.NewClient(target, grpc.WithChainUnaryInterceptor(flypggrpc.UnaryClientInterceptor()), ...)
//	grpc.NewServer(grpc.ChainUnaryInterceptor(flypggrpc.UnaryServerInterceptor()), ...)
package flypggrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/callbacks"
)

// MetadataKey is the gRPC metadata key that carries a bookmark.
const MetadataKey = "flypg-bookmark"

// UnaryClientInterceptor sends the bookmark of the call's context with the
// call and, when the server returns one, merges it into the context's
// session (started with flypg.WithBookmark; without one it is dropped).
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var trailer metadata.MD
		err := invoker(outgoing(ctx), method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
		merge(ctx, trailer)
		return err
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams: the
// server's bookmark is merged once the stream has ended (its trailer is
// read).
func StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(outgoing(ctx), desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &clientStream{ClientStream: s, ctx: ctx}, nil
	}
}

type clientStream struct {
	grpc.ClientStream
	ctx context.Context
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		merge(s.ctx, s.Trailer())
	}
	return err
}

// UnaryServerInterceptor runs each call under the bookmark the caller sent
// (a malformed one is ignored) and, when the handler wrote, returns the new
// bookmark in the trailer.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, before := incoming(ctx)
		resp, err := handler(ctx, req)
		setTrailer(ctx, before, func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) })
		return resp, err
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, before := incoming(ss.Context())
		err := handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
		setTrailer(ctx, before, ss.SetTrailer)
		return err
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// outgoing adds ctx's bookmark to the outgoing metadata.
func outgoing(ctx context.Context) context.Context {
	if b := flypg.BookmarkFrom(ctx); !b.IsZero() {
		return metadata.AppendToOutgoingContext(ctx, MetadataKey, b.String())
	}
	return ctx
}

// merge joins the bookmark in md to ctx's session, if both exist.
func merge(ctx context.Context, md metadata.MD) {
	if callbacks.SessionFrom(ctx) == nil {
		return
	}
	for _, v := range md.Get(MetadataKey) {
		if b, err := flypg.ParseBookmark(v); err == nil {
			flypg.WithBookmark(ctx, b)
		}
	}
}

// incoming starts the call's session at the bookmark it carries, and
// returns the session's version.
func incoming(ctx context.Context) (context.Context, uint64) {
	var b flypg.Bookmark
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get(MetadataKey) {
			if p, err := flypg.ParseBookmark(v); err == nil {
				b = p
			}
		}
	}
	ctx = flypg.WithBookmark(ctx, b)
	return ctx, callbacks.SessionFrom(ctx).Version()
}

// setTrailer sends the session's bookmark if the handler wrote.
func setTrailer(ctx context.Context, before uint64, set func(metadata.MD)) {
	if callbacks.SessionFrom(ctx).Version() == before {
		return
	}
	if b := flypg.BookmarkFrom(ctx); !b.IsZero() {
		set(metadata.Pairs(MetadataKey, b.String()))
	}
}
