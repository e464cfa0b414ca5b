package flypg

import (
	"github.com/flypg/flypg/callbacks"

	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/flypg/flypg/lsn"
)

// Tracers observe what a plugin does, in the manner of pgx's tracers: a
// tracer is any value that implements one or more of the small interfaces
// below, given in Config.Tracers; the plugin calls each method a tracer
// implements and nothing else. New interfaces may be added (for routing
// changes, say) without breaking existing tracers.
//
// Package flypgprom turns them into Prometheus metrics and package
// flypgotel into OpenTelemetry traces that cross regions; the core imports
// neither, so an application that uses neither links neither. Every method
// runs on the caller's goroutine (or the executor's, for executor hooks)
// and must not block.

// WriteTracer is told about every forwarded write after the write and its
// wait for replication: statements and transactions forwarded by a
// replica-region node, and calls (Op "call") it ran on the primary. It sees
// what Config.OnWrite sees.
type WriteTracer interface {
	TraceWrite(ctx context.Context, ev WriteEvent)
}

// WriteEvent describes one forwarded write, for Config.OnWrite and
// WriteTracer.
type WriteEvent struct {
	// Op is "create", "update", "delete", "raw", "row" or "query" for a
	// statement, "commit" for a transaction (db.Transaction, db.Begin,
	// Plugin.DB's transactions), "call" for a registered function.
	Op string
	// Table is the statement's table, when GORM knows it.
	Table string
	// Function is the registered function, for "call".
	Function string
	// LSN is the commit LSN, 0 if nothing committed.
	LSN lsn.LSN
	// Forward is the time spent in the forwarded statement (or
	// transaction, or call), Wait the time spent waiting for the local
	// replica to replay it, Duration the total.
	Forward, Wait, Duration time.Duration
	// Err is the write's or the wait's error, nil on success.
	Err error
	// NoAwait says the caller opted out of the wait (fly.NoAwait).
	NoAwait bool
	// RPCs counts the round trips to the executor.
	RPCs int
}

// StatementTracer brackets every statement a replica-region node's routing
// callbacks send to the primary (writes, and reads that must run there),
// for a tracing span per statement.
type StatementTracer interface {
	// TraceStatementStart is called before the statement is sent. The
	// context it returns is the statement's from then on, down to its gRPC
	// call.
	TraceStatementStart(ctx context.Context, data StatementStart) context.Context
	// TraceStatementEnd is called with that context once the statement and
	// its wait for replication have ended.
	TraceStatementEnd(ctx context.Context, data StatementEnd)
}

// StatementStart describes a statement routed to the primary.
type StatementStart struct {
	Op    string // as WriteEvent.Op
	Table string // when GORM knows it
	// Write is false for a read that runs on the primary (a locking read,
	// flypg.UsePrimary, a forwarded transaction's reads).
	Write bool
}

// StatementEnd is a statement's outcome.
type StatementEnd struct {
	Err error // GORM's error for the statement, the wait's included
}

// WaitTracer brackets every wait for the local replica to replay a commit.
type WaitTracer interface {
	TraceWaitStart(ctx context.Context, data WaitStart) context.Context
	TraceWaitEnd(ctx context.Context, data WaitEnd)
}

// WaitStart describes a wait for replication.
type WaitStart struct {
	LSN lsn.LSN // the commit LSN waited for
}

// WaitEnd is a wait's outcome.
type WaitEnd struct {
	LSN    lsn.LSN
	Waited time.Duration
	Err    error // a *ReplicationError, or nil once the replica replayed LSN
}

// CallTracer brackets every call of a registered function (Function.Call,
// Function.CallRegion), wherever it runs: in-process or on another node.
type CallTracer interface {
	// TraceCallStart is called before the call; the context it returns is
	// the call's, down to its gRPC call and its wait for replication.
	TraceCallStart(ctx context.Context, data CallStart) context.Context
	TraceCallEnd(ctx context.Context, data CallEnd)
}

// CallStart describes a call.
type CallStart struct {
	Function string
	Region   string // where it runs
	Local    bool   // in-process: Region is the caller's own region
}

// CallEnd is a call's outcome.
type CallEnd struct {
	Function string
	Region   string
	Local    bool
	// LSN is the function's commit LSN when it ran on the primary from a
	// replica region (the caller then waited for it), else 0.
	LSN      lsn.LSN
	Wait     time.Duration
	Duration time.Duration
	Err      error
}

// ReplayTracer sees every look a replica-region node's tracker takes at its
// local replica's replay position (one look serves every waiting write).
type ReplayTracer interface {
	TraceReplay(look lsn.Look)
}

// ReadModeTracer is told whenever reads that would run on the local
// replica move to the primary (the replica is unreachable or lagging) or
// back, with the reason.
type ReadModeTracer interface {
	TraceReadMode(mode callbacks.Mode)
}

// GRPCTracer instruments the gRPC connections between nodes: its options
// are added to every client connection to another region's node and to the
// server the node's services run on (Serve, Start, and ServerOptions for
// RegisterGRPC).
type GRPCTracer interface {
	DialOptions() []grpc.DialOption
	ServerOptions() []grpc.ServerOption
}

// SessionTracer carries per-statement context across regions where gRPC
// has none: lone statements travel as messages of long-lived session
// streams, so a gRPC stats handler sees the stream but not the statement.
type SessionTracer interface {
	// SessionHeaders returns the headers to send with a statement whose
	// context is ctx (a trace context, say); nil sends none.
	SessionHeaders(ctx context.Context) map[string]string
	// SessionUnit runs on the executor for every statement that arrives
	// on a session, with the headers its client sent. It returns the
	// context to run the statement in and a function called with its
	// outcome.
	SessionUnit(ctx context.Context, headers map[string]string) (context.Context, func(error))
}

// ExecutorTracer is told about the executor a node serves, once, when it
// first serves it (Serve, Start, RegisterGRPC or ServerOptions); an error
// makes that call fail.
type ExecutorTracer interface {
	TraceExecutor(x ExecutorLoad) error
}

// ExecutorLoad reads an executor's live load.
type ExecutorLoad interface {
	// InFlight is the number of units (statements, transactions, calls)
	// the executor is running.
	InFlight() int64
	// OpenTransactions is the number of forwarded transactions holding a
	// primary connection.
	OpenTransactions() int64
}
