// Package flypgotel traces the work of a flypg plugin with OpenTelemetry,
// across regions. It is a flypg tracer: give it in flypg.Config.Tracers of
// every node.
//
//	plugin := flypg.New(flypg.Config{ /* ... */ Tracers: []any{flypgotel.New(tracerProvider)}})
//
// A replica-region node records, as children of the caller's span:
//
//	flypg.forward <op>        a statement sent to the primary (op: create, update, delete, raw, query, ...)
//	flypg.replication_wait    a wait for the local replica to replay a write
//	flypg.call <function>     a call of a registered function
//
// and, below them, the gRPC client spans of otelgrpc. The executor in the
// primary region records its server spans in the same trace: the W3C trace
// context travels in gRPC metadata for calls and transactions, and in
// per-statement session headers for lone statements, which share long-lived
// session streams (flypg.SessionTracer). The global propagator is left
// alone.
//
// The core package flypg does not import OpenTelemetry: an application that
// does not import this package does not link it.
package flypgotel
