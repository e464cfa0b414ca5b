// Package auth authenticates calls to the flypg forward executor.
//
// The executor runs arbitrary SQL on the PostgreSQL primary for whoever
// calls it, so a caller must prove that it holds a shared secret before
// anything it sends is read, and nothing captured off the network may be
// usable again. Two mechanisms, for two transports:
//
//   - Keyring: TLS 1.3 with mutual authentication keyed from the secret
//     (HKDF → Ed25519 key → a deterministic self-signed certificate, pinned
//     by both sides). This is the transport whenever a secret is set; a
//     peer without the secret fails the handshake. See Keyring.
//   - The per-call HMAC header below, for connections whose TLS the
//     application configured itself (its own certificate): TLS keeps the
//     header from observers, the header proves the secret.
//
// The HMAC header:
//
//	authorization: flypg-hmac v1 ts=<unix seconds>,nonce=<nonce>,mac=<mac>
//
//	nonce = base64url, unpadded, of 16 random bytes
//	mac   = base64url, unpadded, of
//	        HMAC-SHA256(secret, "v1\n" + ts + "\n" + nonce + "\n" + fullMethod)
//
// The secret never crosses the wire; the timestamp bounds how long a header
// is valid (±2 minutes by default) and the Verifier remembers every nonce it
// accepted until then, so a header is accepted at most once by a process;
// fullMethod is inside the MAC, so a header is bound to its method. The MAC
// is checked before the timestamp, so that a caller without the secret
// learns nothing about the server's clock. The header covers neither the
// message nor the server instance: it is safe only inside TLS.
//
// The header fields must appear in the order above and in canonical form
// (decimal ts without leading zeros, unpadded base64url); there is exactly
// one way to encode a given header.
//
// Client side: pass NewCredentials to grpc.WithPerRPCCredentials.
// Server side: create one Verifier per process and call Verifier.Verify at
// the top of every handler (or install exactly one of its interceptors, not
// both and not together with direct calls: each Verify consumes the nonce,
// so a second Verify of the same call is rejected as a replay).
//
// Key rotation: a Verifier accepts the secret given to NewVerifier plus any
// given with WithAdditionalSecrets. Roll out the new secret to servers as an
// additional secret, switch clients to it, then drop the old one.
//
// The package also carries the "flypg-protocol" metadata header (WithProtocol
// on the client, CheckProtocol on the server) so that a version mismatch is
// reported by name instead of failing obscurely.
package auth
