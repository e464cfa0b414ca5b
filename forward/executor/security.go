package executor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/auth"
	"github.com/flypg/flypg/forward/protocol"
)

// This file decides who a caller is before anything it sends is read, and
// bounds what a peer can hold: connections, their handshakes and idle
// time, streams, headers, message sizes and decoded arguments.
//
// With a Secret, the executor speaks only TLS 1.3 keyed from it (see
// auth.Keyring): a peer without the secret fails the handshake and no gRPC
// frame of it is ever read. A call on a connection whose TLS the
// application configured itself (RegisterGRPC on its own server) must
// carry an HMAC of the secret instead, checked from its headers before its
// body is read. Without a secret, only loopback callers are served.

// Defaults for the connection limits of Config.
const (
	DefaultMaxConnections    = 1024
	DefaultMaxStreamsPerConn = 256
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultIdleConnTimeout   = 5 * time.Minute
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultMaxArgValues      = 100_000

	// recvMargin is what the gRPC server accepts above MaxRequestBytes, so
	// that a request a little over the limit is refused by the executor
	// itself (its answer says that nothing ran) and the envelope of a
	// session or transaction message fits.
	recvMargin = 64 << 10
)

// newAuth derives the executor's TLS identity and call verifier from its
// secrets (none without a secret).
func newAuth(secret string, older []string) (*auth.Keyring, *auth.Verifier, error) {
	if secret == "" {
		return nil, nil, nil
	}
	k, err := auth.NewKeyring(secret, older...)
	if err != nil {
		return nil, nil, err
	}
	v, err := auth.NewVerifier(secret, auth.WithAdditionalSecrets(older...))
	if err != nil {
		return nil, nil, err
	}
	return k, v, nil
}

// forgetSecrets clears the secrets and the DSN from the configuration the
// executor keeps, once its keys and pool configuration are derived: they
// then live only where no printing of the executor reaches.
func (x *Executor) forgetSecrets() {
	x.cfg.Secret, x.cfg.OldSecrets, x.cfg.DSN = "", nil, ""
}

// securityOptions are the gRPC server options that authenticate callers
// and bound what they hold.
func (x *Executor) securityOptions() []grpc.ServerOption {
	var tc credentials.TransportCredentials = insecure.NewCredentials()
	if x.keys != nil {
		tc = credentials.NewTLS(x.keys.ServerConfig())
	}
	return []grpc.ServerOption{
		grpc.Creds(&limitedTransport{TransportCredentials: tc, x: x}),
		grpc.InTapHandle(x.tap),
		grpc.ConnectionTimeout(x.cfg.HandshakeTimeout),
		grpc.MaxConcurrentStreams(uint32(x.cfg.MaxStreamsPerConn)),
		grpc.MaxHeaderListSize(uint32(x.cfg.MaxHeaderBytes)),
		grpc.MaxRecvMsgSize(x.cfg.MaxRequestBytes + recvMargin),
		grpc.ForceServerCodecV2(limitCodec{maxValues: x.cfg.MaxArgValues}),
	}
}

// authenticatedKey marks a stream's context once tap has admitted it.
type authenticatedKey struct{}

// tap admits or refuses a call of the executor's service from its headers
// alone: gRPC runs it when a stream opens, before any message is read, so
// a refused caller costs a few kilobytes of headers. Other services on the
// same server (health, the application's own) pass untouched.
func (x *Executor) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if !strings.HasPrefix(info.FullMethodName, "/"+forwardpb.Executor_ServiceDesc.ServiceName+"/") {
		return ctx, nil
	}
	if err := x.authenticate(ctx, info.FullMethodName); err != nil {
		return nil, err
	}
	return context.WithValue(ctx, authenticatedKey{}, info.FullMethodName), nil
}

// authorize checks credentials (unless tap did) and protocol version
// before anything runs.
func (x *Executor) authorize(ctx context.Context, method string) error {
	if m, _ := ctx.Value(authenticatedKey{}).(string); m != method {
		// Served without tap: registered on a server that lacks the
		// executor's ServerOptions.
		if err := x.authenticate(ctx, method); err != nil {
			return err
		}
	}
	return auth.CheckProtocol(ctx, protocol.Version)
}

// authenticate decides whether the caller of method may use the executor.
// The messages say nothing about the server (its clock, its secrets).
func (x *Executor) authenticate(ctx context.Context, method string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "flypg: unauthenticated: no peer")
	}
	switch {
	case x.keys != nil && x.keys.Authenticated(p.AuthInfo):
		return nil
	case x.verifier != nil && privateTransport(p.AuthInfo):
		// TLS configured by the application: the call carries an HMAC of
		// the secret, unreadable on the network.
		return x.verifier.Verify(ctx, method)
	case x.keys != nil:
		return status.Error(codes.Unauthenticated, "flypg: unauthenticated: the executor accepts only mutual TLS keyed from the shared secret, or calls signed with it inside TLS")
	case isLoopback(p.Addr) || verifiedClient(p.AuthInfo):
		return nil
	}
	return status.Error(codes.Unauthenticated, "flypg: unauthenticated: this executor has no secret and serves loopback callers only")
}

// privateTransport reports whether the connection is encrypted and
// integrity-protected (TLS).
func privateTransport(ai credentials.AuthInfo) bool {
	c, ok := ai.(interface {
		GetCommonAuthInfo() credentials.CommonAuthInfo
	})
	return ok && c.GetCommonAuthInfo().SecurityLevel == credentials.PrivacyAndIntegrity
}

// verifiedClient reports whether the application's own TLS verified a
// client certificate chain (mutual TLS with its certificate authority).
func verifiedClient(ai credentials.AuthInfo) bool {
	info, ok := ai.(credentials.TLSInfo)
	return ok && len(info.State.VerifiedChains) > 0
}

// errTooManyConns refuses a connection over MaxConnections.
var errTooManyConns = errors.New("flypg: executor at MaxConnections; connection refused")

// limitedTransport caps the executor's connections (gRPC closes a
// connection whose handshake fails) and counts each until it closes.
type limitedTransport struct {
	credentials.TransportCredentials
	x *Executor
}

func (t *limitedTransport) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	x := t.x
	if x.conns.Add(1) > int64(x.cfg.MaxConnections) {
		x.conns.Add(-1)
		x.refuseConn(raw.RemoteAddr())
		return nil, nil, errTooManyConns
	}
	release := sync.OnceFunc(func() { x.conns.Add(-1) })
	conn, ai, err := t.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		release()
		return nil, nil, err
	}
	return &countedConn{Conn: conn, release: release}, ai, nil
}

// refuseConn counts a connection refused at MaxConnections and logs it, at
// most every ten seconds.
func (x *Executor) refuseConn(from net.Addr) {
	n := x.refusedConns.Add(1)
	now := time.Now().UnixNano()
	last := x.refusedLogged.Load()
	if now-last >= int64(10*time.Second) && x.refusedLogged.CompareAndSwap(last, now) {
		x.log.Warn("forward: executor: connection refused at MaxConnections", "max", x.cfg.MaxConnections, "from", from.String(), "refused_total", n)
	}
}

func (t *limitedTransport) Clone() credentials.TransportCredentials {
	return &limitedTransport{TransportCredentials: t.TransportCredentials.Clone(), x: t.x}
}

type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// Connections returns the number of connections the executor's servers
// hold now, and how many they refused at MaxConnections since it started.
func (x *Executor) Connections() (open, refused int64) {
	return x.conns.Load(), x.refusedConns.Load()
}

// boundRows makes the primary connection refuse a message (a result row,
// in practice) over MaxRowBytes from its length prefix, before buffering
// it. pgx reports that as a broken connection.
func (x *Executor) boundRows(c *pgx.Conn) {
	c.PgConn().Frontend().SetMaxBodyLen(x.cfg.MaxRowBytes)
}

// explainRowLimit names the limit in the error of a connection that broke
// on a row over MaxRowBytes.
func explainRowLimit(err error) error {
	var tooLong *pgproto3.ExceededMaxBodyLenErr
	if errors.As(err, &tooLong) {
		return fmt.Errorf("a result row of %d bytes exceeds the executor's MaxRowBytes (%d); the primary connection was closed: %w", tooLong.ActualBodyLen, tooLong.MaxExpectedBodyLen, err)
	}
	return err
}
