package protocol

import "time"

// Version is the forwarding protocol's major version, sent by clients in
// the flypg-protocol header and checked by the executor.
const Version = "2"

// RetryHorizon is how long after a unit's first attempt a client still
// retries it, or asks the executor about it, when a reply was lost; then
// it reports the unit as in doubt. Every answer about a unit reaches the
// client within RetryHorizon of its first attempt, which is why an
// executor keeps answers for longer than that.
const RetryHorizon = 15 * time.Second

// Trailer metadata by which the executor tells a client what became of a
// unit that ended with a gRPC error, so that the client never has to guess
// from a status code. A unit that runs on a session stream has no trailer
// of its own: the same facts travel in its SessionStatus (see Trailer).
const (
	// TrailerOutcome says whether the unit committed: OutcomeNotRun,
	// OutcomeUnknown or OutcomeCommitted.
	TrailerOutcome = "flypg-outcome"
	// TrailerLSN is the commit LSN (decimal) of a unit that committed.
	TrailerLSN = "flypg-commit-lsn"
	// TrailerRefusal says why a unit that did not run was refused, where
	// the status code alone does not tell: RefusalBusy, RefusalDatabase.
	TrailerRefusal = "flypg-refusal"
	// TrailerLimit names the executor limit (a field of the executor's
	// configuration, such as "TxIdleTimeout" or "MaxRequestBytes") that
	// refused or ended the unit.
	TrailerLimit = "flypg-limit"
	// TrailerRequest says whether the executor read a call's request: it
	// sets RequestUnread before reading it and adds RequestRead once it
	// has. gRPC refuses a request over the server's receive limit (the
	// executor's MaxRequestBytes and a margin) while reading it, before
	// the executor's code runs; a call that ends so has RequestUnread
	// alone, and nothing of it ran. Calls only: a stream's messages are
	// read by the executor's code.
	TrailerRequest = "flypg-request"
)

// Values of TrailerRequest.
const (
	RequestUnread = "unread"
	RequestRead   = "read"
)

// Values of TrailerOutcome.
const (
	OutcomeNotRun    = "not-committed" // nothing committed; safe to run again
	OutcomeUnknown   = "unknown"       // may have committed
	OutcomeCommitted = "committed"     // committed; see TrailerLSN
)

// Values of TrailerRefusal. A refused unit's outcome is always
// OutcomeNotRun.
const (
	RefusalBusy     = "busy"              // no slot or no ledger room before the deadline
	RefusalDatabase = "database-mismatch" // the client replicates another database
)
