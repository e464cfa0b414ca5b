// Package protocol is the contract between the forwarding client (package
// forward) and the executor (package forward/executor): what both ends
// must agree on beyond the messages of package forwardpb.
//
//   - Version, sent by every client and checked by the executor, and
//     RetryHorizon, the time within which a client retries or asks about a
//     unit (an executor keeps answers longer).
//   - The trailer of a unit that ended with a gRPC error (Trailer): did it
//     commit (OutcomeNotRun, OutcomeUnknown, OutcomeCommitted, with the
//     commit LSN), why was it refused (RefusalBusy, RefusalDatabase), which
//     executor limit refused or ended it. On a session stream, where a
//     unit has no trailer of its own, the same facts travel in its
//     SessionStatus (SessionStatus, FromSessionStatus).
//   - The database Identity a client replicates, which the executor
//     checks before a unit runs.
//   - The errors both ends speak: a call handler on the executor returns
//     ErrInDoubt, ErrUnknownFunction or a *CallError, and the client
//     reports the same to its caller.
//
// A client acts on these typed fields and on gRPC status codes only, never
// on message text. The package imports only forwardpb, lsn and gRPC's
// status and metadata types, so that either end can import it without the
// other.
package protocol
