package auth

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"time"

	"github.com/flypg/flypg/forward/protocol"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// DefaultWindow is the default clock skew tolerated in either direction.
	DefaultWindow = 2 * time.Minute
	// DefaultReplayCacheSize is the default maximum number of remembered
	// nonces; see WithReplayCacheSize for how to size it.
	DefaultReplayCacheSize = 1 << 20
)

// Verifier checks the authorization header of incoming RPCs. Create one per
// process with NewVerifier and share it; it is safe for concurrent use.
type Verifier struct {
	macs   []signer // one per accepted secret; see signer for why funcs
	window time.Duration
	now    func() time.Time
	start  time.Time // for monotonic readings: now().Sub(start)
	replay *replayCache
}

type verifierConfig struct {
	extra     []string
	window    time.Duration
	now       func() time.Time
	cacheSize int
}

// VerifierOption configures NewVerifier.
type VerifierOption func(*verifierConfig)

// WithWindow sets the clock skew tolerated in either direction (default
// DefaultWindow). A header is valid while its timestamp is within ±d of the
// server clock, and its nonce is remembered for that long.
func WithWindow(d time.Duration) VerifierOption {
	return func(c *verifierConfig) { c.window = d }
}

// WithNow replaces the clock (default time.Now); for tests.
func WithNow(now func() time.Time) VerifierOption {
	return func(c *verifierConfig) { c.now = now }
}

// WithReplayCacheSize bounds the number of remembered nonces (default
// DefaultReplayCacheSize). It must be at least the peak call rate times
// twice the window, e.g. 1,000 calls/s with a 2 minute window needs 240,000.
// When the cache is full of unexpired nonces, calls fail with
// codes.ResourceExhausted ("replay cache full") instead of the cache
// growing without bound.
func WithReplayCacheSize(n int) VerifierOption {
	return func(c *verifierConfig) { c.cacheSize = n }
}

// WithAdditionalSecrets makes the Verifier also accept headers signed with
// any of secrets, for key rotation. Clients sign with a single secret.
func WithAdditionalSecrets(secrets ...string) VerifierOption {
	return func(c *verifierConfig) { c.extra = append(c.extra, secrets...) }
}

// NewVerifier returns a Verifier accepting headers signed with secret (at
// least MinSecretLen bytes) or any secret added with WithAdditionalSecrets.
func NewVerifier(secret string, opts ...VerifierOption) (*Verifier, error) {
	cfg := verifierConfig{window: DefaultWindow, now: time.Now, cacheSize: DefaultReplayCacheSize}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.window <= 0:
		return nil, fmt.Errorf("flypg auth: new verifier: window must be positive, got %v", cfg.window)
	case cfg.now == nil:
		return nil, errors.New("flypg auth: new verifier: nil clock")
	case cfg.cacheSize <= 0:
		return nil, fmt.Errorf("flypg auth: new verifier: replay cache size must be positive, got %d", cfg.cacheSize)
	}
	macs, err := newSigners(append([]string{secret}, cfg.extra...))
	if err != nil {
		return nil, fmt.Errorf("flypg auth: new verifier: %w", err)
	}
	return &Verifier{macs: macs, window: cfg.window, now: cfg.now, start: cfg.now(), replay: newReplayCache(cfg.cacheSize)}, nil
}

// Verify authenticates the RPC whose incoming metadata is in ctx, as a call
// of fullMethod: the method actually being served (e.g. the generated
// Executor_Exec_FullMethodName constant, or grpc.Method(ctx)), never a name
// supplied by the client.
//
// It returns nil or a gRPC status error: codes.Unauthenticated for a
// missing, malformed, unsupported-version, out-of-window, wrongly signed or
// replayed header, and codes.ResourceExhausted with the ErrorInfo reason
// protocol.ReasonBusy if the replay cache is full.
// A wrong secret and a header signed for another method are
// indistinguishable (both are a MAC mismatch) because the method is not
// sent. Messages never contain the secret, and nothing about the server's
// clock reaches a caller whose MAC is wrong.
//
// Verify consumes the nonce: call it exactly once per RPC.
func (v *Verifier) Verify(ctx context.Context, fullMethod string) error {
	vals := metadata.ValueFromIncomingContext(ctx, AuthHeader)
	switch len(vals) {
	case 0:
		return unauthenticated("missing %s header", AuthHeader)
	case 1:
	default:
		return unauthenticated("malformed %s header: sent %d times, want once", AuthHeader, len(vals))
	}

	h, err := parseHeader(vals[0])
	if errors.Is(err, errUnsupportedVersion) {
		return unauthenticated("%s header: %v", AuthHeader, err)
	}
	if err != nil {
		return unauthenticated("malformed %s header: %v", AuthHeader, err)
	}

	// The MAC is checked first: a caller without the secret learns only
	// that its header is wrong, nothing about the server's clock (which
	// the window check would otherwise reveal, one probe at a time).
	if !v.macMatches(&h, fullMethod) {
		return unauthenticated("bad MAC for %s: wrong secret, or header signed for another method", fullMethod)
	}

	// Past the MAC the caller holds the secret: a clear skew message is
	// what an operator with a drifting clock needs.
	now := v.now()
	signed := time.Unix(h.ts, 0)
	if skew := now.Sub(signed); skew > v.window {
		return unauthenticated("timestamp is %v in the past, outside the ±%v window (replayed header or client clock behind)", skew.Truncate(time.Second), v.window)
	} else if -skew > v.window {
		return unauthenticated("timestamp is %v in the future, outside the ±%v window (client clock ahead)", (-skew).Truncate(time.Second), v.window)
	}

	// Only authenticated headers reach the replay cache, so only holders of
	// the secret can fill it.
	switch v.replay.admit(h.nonce, signed.Add(v.window).UnixNano(), now.UnixNano(), int64(now.Sub(v.start))) {
	case replayOK:
		return nil
	case replaySeen:
		return unauthenticated("replayed nonce: this header was already used")
	case replayBehindHorizon:
		return unauthenticated("timestamp is older than nonces already forgotten (server clock moved backwards); retry")
	default: // replayFull
		// Typed, so that a client knows without reading the message that
		// nothing ran and a retry later is safe.
		return protocol.Refusal(codes.ResourceExhausted, protocol.ReasonBusy,
			fmt.Sprintf("flypg auth: replay cache full (%d unexpired nonces); retry later or raise the cache size", v.replay.max))
	}
}

// macMatches reports whether h carries a valid MAC for fullMethod under any
// accepted secret, comparing in constant time.
func (v *Verifier) macMatches(h *header, fullMethod string) bool {
	for _, mac := range v.macs {
		want := mac(h.tsRaw, h.nonceRaw, fullMethod)
		if hmac.Equal(want[:], h.mac[:]) {
			return true
		}
	}
	return false
}

func unauthenticated(format string, args ...any) error {
	return status.Errorf(codes.Unauthenticated, "flypg auth: "+format, args...)
}

// Format prints a description without any secret under every verb, so
// logging the Verifier is harmless (the fields are safe anyway).
func (v Verifier) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "flypg-hmac verifier (%d secret(s), window ±%v", len(v.macs), v.window)
	if v.replay != nil {
		fmt.Fprintf(f, ", replay cache %d/%d", v.replay.len(), v.replay.max)
	}
	fmt.Fprint(f, ")")
}
