package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/flypg/flypg/forward/internal/auth"
)

// TransportCredentials returns the gRPC transport credentials of a client
// holding secret (and, during a rotation, older secrets): mutual TLS 1.3
// keyed from the secret, which is what an executor with a Secret speaks.
// Clients of this package use it on their own; it is for dialing an
// executor with other gRPC tools (a health checker, say).
func TransportCredentials(secret string, older ...string) (credentials.TransportCredentials, error) {
	k, err := auth.NewKeyring(secret, older...)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(k.ClientConfig()), nil
}

// dialSecurity returns the dial options that authenticate a client, and
// the transport that notices an executor refusing them; it then clears
// the secrets from cfg, so that they live only where no printing of the
// client reaches:
//   - with TLS set, that TLS (the executor runs on the application's own
//     server, with its certificate) and every call signed with the secret;
//   - else with a Secret, mutual TLS keyed from it;
//   - else plaintext, which only an executor without a secret serving
//     loopback accepts.
func dialSecurity(cfg *ClientConfig) ([]grpc.DialOption, *clientTransport, error) {
	defer func() { cfg.Secret, cfg.OldSecrets = "", nil }()
	var opts []grpc.DialOption
	var tc credentials.TransportCredentials
	switch {
	case cfg.TLS != nil:
		tc = credentials.NewTLS(cfg.TLS)
		if cfg.Secret != "" {
			creds, err := auth.NewCredentials(cfg.Secret, true)
			if err != nil {
				return nil, nil, err
			}
			opts = append(opts, grpc.WithPerRPCCredentials(creds))
		}
	case cfg.Secret != "":
		var err error
		if tc, err = TransportCredentials(cfg.Secret, cfg.OldSecrets...); err != nil {
			return nil, nil, err
		}
	default:
		tc = insecure.NewCredentials()
	}
	tr := &clientTransport{TransportCredentials: tc, state: &transportState{}}
	return append(opts, grpc.WithTransportCredentials(tr)), tr, nil
}

// clientTransport remembers that the executor refused the client's
// credentials in the TLS handshake, which gRPC reports only as a
// connection that does not become ready.
type clientTransport struct {
	credentials.TransportCredentials
	state *transportState
}

type transportState struct {
	refused atomic.Pointer[refusedError] // nil once a connection was accepted
}

// refusedError: the executor's TLS refused the client's secret, or the
// client refused the executor's certificate.
type refusedError struct{ err error }

func (e *refusedError) Error() string {
	if errors.Is(e.err, auth.ErrNotPinned) {
		return fmt.Sprintf("the executor's TLS certificate is not derived from this client's secret (another secret, or another server): %v", e.err)
	}
	return fmt.Sprintf("the executor refused this client's secret in the TLS handshake: %v", e.err)
}

func (e *refusedError) Unwrap() error { return e.err }

// Is makes the refusal match ErrUnauthenticated.
func (e *refusedError) Is(target error) bool { return target == ErrUnauthenticated }

func (t *clientTransport) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := t.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		t.state.note(err)
		return nil, nil, err
	}
	return &watchedConn{Conn: conn, state: t.state}, ai, nil
}

func (t *clientTransport) Clone() credentials.TransportCredentials {
	return &clientTransport{TransportCredentials: t.TransportCredentials.Clone(), state: t.state}
}

// note records err if it says that the executor refused the credentials:
// a TLS alert from it (TLS 1.3 refuses a client certificate after the
// client's side of the handshake completed, so the alert arrives with the
// first read), or its certificate not derived from our secret.
func (s *transportState) note(err error) {
	if auth.IsRemoteAlert(err) || errors.Is(err, auth.ErrNotPinned) {
		s.refused.Store(&refusedError{err: err})
	}
}

// watchedConn clears the refusal once the executor sent data: it
// accepted the client.
type watchedConn struct {
	net.Conn
	state    *transportState
	accepted atomic.Bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.accepted.Swap(true) {
		c.state.refused.Store(nil)
	}
	if err != nil {
		c.state.note(err)
	}
	return n, err
}

// refusedOr returns the executor's refusal of the client's credentials
// when there is one, else err: the reason a connection is not ready.
func (c *Client) refusedOr(err error) error {
	if r := c.transport.state.refused.Load(); r != nil {
		return r
	}
	return err
}
