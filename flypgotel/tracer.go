package flypgotel

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg"
)

// ScopeName is the instrumentation scope of flypgotel's spans.
const ScopeName = "github.com/flypg/flypg/flypgotel"

// Tracer traces a plugin's statements, waits and calls, and its gRPC
// traffic. It implements flypg.StatementTracer, flypg.WaitTracer,
// flypg.CallTracer, flypg.GRPCTracer and flypg.SessionTracer.
type Tracer struct {
	provider trace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

var (
	_ flypg.StatementTracer = (*Tracer)(nil)
	_ flypg.WaitTracer      = (*Tracer)(nil)
	_ flypg.CallTracer      = (*Tracer)(nil)
	_ flypg.GRPCTracer      = (*Tracer)(nil)
	_ flypg.SessionTracer   = (*Tracer)(nil)
)

// New returns a Tracer that records spans with tp; nil means
// otel.GetTracerProvider().
func New(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Tracer{provider: tp, tracer: tp.Tracer(ScopeName)}
}

// TraceStatementStart starts the span "flypg.forward <op>".
func (t *Tracer) TraceStatementStart(ctx context.Context, data flypg.StatementStart) context.Context {
	ctx, _ = t.tracer.Start(ctx, "flypg.forward "+data.Op,
		trace.WithAttributes(attribute.String("db.sql.table", data.Table), attribute.Bool("flypg.write", data.Write)))
	return ctx
}

// TraceStatementEnd ends the statement's span.
func (t *Tracer) TraceStatementEnd(ctx context.Context, data flypg.StatementEnd) {
	end(ctx, data.Err, "forwarded statement failed")
}

// TraceWaitStart starts the span "flypg.replication_wait".
func (t *Tracer) TraceWaitStart(ctx context.Context, data flypg.WaitStart) context.Context {
	ctx, _ = t.tracer.Start(ctx, "flypg.replication_wait", trace.WithAttributes(attribute.String("flypg.lsn", data.LSN.String())))
	return ctx
}

// TraceWaitEnd ends the wait's span.
func (t *Tracer) TraceWaitEnd(ctx context.Context, data flypg.WaitEnd) {
	end(ctx, data.Err, "replica did not replay the write in time")
}

// TraceCallStart starts the span "flypg.call <function>".
func (t *Tracer) TraceCallStart(ctx context.Context, data flypg.CallStart) context.Context {
	ctx, _ = t.tracer.Start(ctx, "flypg.call "+data.Function, trace.WithAttributes(
		attribute.String("flypg.function", data.Function), attribute.String("flypg.region", data.Region), attribute.Bool("flypg.local", data.Local)))
	return ctx
}

// TraceCallEnd ends the call's span.
func (t *Tracer) TraceCallEnd(ctx context.Context, data flypg.CallEnd) {
	end(ctx, data.Err, "call failed")
}

// end ends ctx's span, with err as its error.
func end(ctx context.Context, err error, what string) {
	span := trace.SpanFromContext(ctx)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, what)
	}
	span.End()
}

// DialOptions trace the gRPC calls to other nodes and carry the trace
// context with them (W3C traceparent).
func (t *Tracer) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(t.provider), otelgrpc.WithPropagators(t.prop)))}
}

// ServerOptions trace the gRPC calls the node serves, as children of their
// callers' spans.
func (t *Tracer) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(t.provider), otelgrpc.WithPropagators(t.prop)))}
}

// SessionHeaders carries the trace context of a statement that travels on
// a session, where no per-call metadata exists.
func (t *Tracer) SessionHeaders(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	t.prop.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	return carrier
}

// SessionUnit gives each statement that arrives on a session the server
// span a call would have had, as a child of the caller's span.
func (t *Tracer) SessionUnit(ctx context.Context, headers map[string]string) (context.Context, func(error)) {
	ctx = t.prop.Extract(ctx, propagation.MapCarrier(headers))
	ctx, span := t.tracer.Start(ctx, "flypg.forward.v1.Executor/Exec", trace.WithSpanKind(trace.SpanKindServer))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, status.Convert(err).Message())
		}
		span.End()
	}
}
