// Package auth authenticates calls to the flypg forward executor.
//
// The executor runs arbitrary SQL on the PostgreSQL primary for whoever
// calls it, so every RPC must prove that its caller holds a shared secret.
// The scheme is a per-call HMAC rather than a bearer token:
//
//	authorization: flypg-hmac v1 ts=<unix seconds>,nonce=<nonce>,mac=<mac>
//
//	nonce = base64url, unpadded, of 16 random bytes
//	mac   = base64url, unpadded, of
//	        HMAC-SHA256(secret, "v1\n" + ts + "\n" + nonce + "\n" + fullMethod)
//
// Why this shape:
//
//   - The secret never crosses the wire. A captured header reveals nothing
//     that lets an attacker sign a different call, which matters because the
//     transport may be plaintext on a private network (Fly's WireGuard 6PN);
//     NewCredentials only demands TLS when asked to.
//   - Replay protection. The timestamp bounds how long a header is valid
//     (a skew window, default ±2 minutes) and the Verifier remembers every
//     nonce it accepted until its timestamp leaves the window, so a captured
//     header is accepted at most once.
//   - Method binding. fullMethod (e.g. "/flypg.forward.v1.Executor/Exec") is
//     inside the MAC, so a header captured on one method cannot be replayed
//     against another. The server verifies against the method it is actually
//     serving, never against anything the client claims.
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
