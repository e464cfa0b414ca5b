package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"time"

	"google.golang.org/grpc/credentials"
)

// clientCreds signs each RPC. It implements credentials.PerRPCCredentials.
type clientCreds struct {
	mac        signer // holds the secret; see signer for why it is a func
	requireTLS bool
	now        func() time.Time
	random     io.Reader
}

// NewCredentials returns per-RPC credentials that sign every call with
// secret (at least MinSecretLen bytes). Use them with
// grpc.WithPerRPCCredentials.
//
// requireTLS is returned by RequireTransportSecurity: with true, grpc refuses
// to send the header over a plaintext connection. false is meant for private
// networks such as Fly's WireGuard 6PN; the secret itself is never sent, but
// the SQL and its results are then readable by anyone on the path.
func NewCredentials(secret string, requireTLS bool) (credentials.PerRPCCredentials, error) {
	return newCredentials(secret, requireTLS, time.Now, rand.Reader)
}

// newCredentials lets tests inject the clock and the nonce source.
func newCredentials(secret string, requireTLS bool, now func() time.Time, random io.Reader) (*clientCreds, error) {
	signers, err := newSigners([]string{secret})
	if err != nil {
		return nil, fmt.Errorf("flypg auth: new credentials: %w", err)
	}
	return &clientCreds{mac: signers[0], requireTLS: requireTLS, now: now, random: random}, nil
}

// GetRequestMetadata builds the authorization header for the RPC described
// by the credentials.RequestInfo in ctx; the method name is taken from
// there because it must be inside the MAC. The uri arguments are ignored.
func (c *clientCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok || ri.Method == "" {
		// grpc always sets RequestInfo; its absence means we are called
		// outside an RPC and cannot bind the signature to a method.
		return nil, fmt.Errorf("flypg auth: no gRPC method in context; cannot sign")
	}
	h, err := c.sign(ri.Method)
	if err != nil {
		return nil, err
	}
	return map[string]string{AuthHeader: h}, nil
}

// RequireTransportSecurity reports the requireTLS given to NewCredentials.
func (c *clientCreds) RequireTransportSecurity() bool { return c.requireTLS }

// sign returns the header value for one call of fullMethod.
func (c *clientCreds) sign(fullMethod string) (string, error) {
	var raw [nonceLen]byte
	if _, err := io.ReadFull(c.random, raw[:]); err != nil {
		return "", fmt.Errorf("flypg auth: generating nonce: %w", err)
	}
	nonce := base64.RawURLEncoding.EncodeToString(raw[:])
	ts := strconv.FormatInt(c.now().Unix(), 10)
	mac := c.mac(ts, nonce, fullMethod)
	return formatHeader(ts, nonce, mac[:]), nil
}

// Format prints a description without the secret under every verb, so
// logging the credentials is harmless (the fields are safe anyway).
func (c clientCreds) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "flypg-hmac credentials (requireTLS=%t)", c.requireTLS)
}
