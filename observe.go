package flypg

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/lsn"
)

// metrics are a plugin's Prometheus collectors. They are registered on the
// Registerer the caller gives in Config.Metrics, never on the global one.
type metrics struct {
	forwarded *prometheus.CounterVec   // by op and outcome
	rpc       *prometheus.HistogramVec // by method and code
	wait      prometheus.Histogram
	timeouts  prometheus.Counter
	polls     *prometheus.CounterVec // by outcome

	highest  atomic.Uint64              // highest commit LSN this node forwarded
	replayed atomic.Pointer[lsn.Status] // the tracker's last look
	reg      prometheus.Registerer
	labels   prometheus.Labels
}

func newMetrics(reg prometheus.Registerer, labels prometheus.Labels) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "flypg", Name: name, Help: help, ConstLabels: labels}
	}
	hist := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		o := opts(name, help)
		return prometheus.HistogramOpts{Namespace: o.Namespace, Name: o.Name, Help: o.Help, ConstLabels: o.ConstLabels, Buckets: buckets}
	}
	// Latencies span loopback (sub-millisecond) to cross-ocean (hundreds of
	// milliseconds) round trips.
	buckets := prometheus.ExponentialBuckets(0.0002, 2, 15)
	m := &metrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts(opts("forwarded_total", "Forwarded writes (statements, transactions, calls) by operation and outcome.")), []string{"op", "outcome"}),
		rpc:       prometheus.NewHistogramVec(hist("forward_rpc_duration_seconds", "Round trips to the primary region's executor, by gRPC method and status code.", buckets), []string{"method", "code"}),
		wait:      prometheus.NewHistogram(hist("replication_wait_duration_seconds", "Time spent waiting for the local replica to replay a forwarded write.", buckets)),
		timeouts:  prometheus.NewCounter(prometheus.CounterOpts(opts("replication_wait_timeouts_total", "Waits for replication that ended before the replica replayed the write (the write committed)."))),
		polls:     prometheus.NewCounterVec(prometheus.CounterOpts(opts("tracker_polls_total", "Looks at the local replica's replay position, by outcome.")), []string{"outcome"}),
		reg:       reg,
		labels:    labels,
	}
	lagBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("replay_lag_bytes", "WAL bytes between the newest write this node forwarded and the local replica's replay position at the last look.")), func() float64 {
		return float64(m.lagBytes())
	})
	lagSeconds := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("replay_lag_seconds", "Age of the last transaction the local replica replayed, while it is behind this node's newest forwarded write; 0 when caught up.")), func() float64 {
		if m.lagBytes() == 0 {
			return 0
		}
		if st := m.replayed.Load(); st != nil && !st.ReplayedAt.IsZero() {
			return time.Since(st.ReplayedAt).Seconds()
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.forwarded, m.rpc, m.wait, m.timeouts, m.polls, lagBytes, lagSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("flypg: register metrics: %w (two plugins on one registry need different Config.MetricsLabels)", err)
		}
	}
	return m, nil
}

func (m *metrics) lagBytes() uint64 {
	st := m.replayed.Load()
	h := m.highest.Load()
	if st == nil || h <= uint64(st.Replayed) {
		return 0
	}
	return h - uint64(st.Replayed)
}

// observeWrite counts a forwarded write and its wait.
func (m *metrics) observeWrite(ev callbacks.Event) {
	outcome := "ok"
	switch {
	case errors.Is(ev.Err, ErrReplicationTimeout):
		outcome = "replication_timeout"
		m.timeouts.Inc()
	case errors.As(ev.Err, new(*ReplicationError)):
		outcome = "replication_error"
	case ev.Err != nil:
		outcome = "error"
	}
	m.forwarded.WithLabelValues(ev.Op, outcome).Inc()
	if uint64(ev.LSN) > m.highest.Load() {
		m.highest.Store(uint64(ev.LSN)) // a racing smaller value is harmless: the gauge is approximate
	}
	if !ev.NoAwait && ev.LSN != 0 {
		m.wait.Observe(ev.Wait.Seconds())
	}
}

func (m *metrics) onLook(l lsn.Look) {
	if l.Err != nil {
		m.polls.WithLabelValues("error").Inc()
		return
	}
	m.polls.WithLabelValues("ok").Inc()
	st := l.Status
	m.replayed.Store(&st)
}

func (m *metrics) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.rpc.WithLabelValues(shortMethod(method), status.Code(err).String()).Observe(time.Since(start).Seconds())
	return err
}

// stream times the opening of a stream; a transaction's round trips are
// counted by the forwarded-writes metrics.
func (m *metrics) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	start := time.Now()
	s, err := streamer(ctx, desc, cc, method, opts...)
	m.rpc.WithLabelValues(shortMethod(method), status.Code(err).String()).Observe(time.Since(start).Seconds())
	return s, err
}

func shortMethod(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}

// registerExecutor adds the executor's gauges.
func (m *metrics) registerExecutor(x *forward.Executor) error {
	opts := func(name, help string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Namespace: "flypg", Name: name, Help: help, ConstLabels: m.labels}
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(opts("executor_inflight_units", "Forwarded units (statements, transactions, calls) the executor is running."), func() float64 { return float64(x.InFlight()) }),
		prometheus.NewGaugeFunc(opts("executor_open_transactions", "Forwarded transactions holding a primary connection."), func() float64 { return float64(x.OpenTransactions()) }),
	} {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("flypg: register executor metrics: %w", err)
		}
	}
	return nil
}

// tracing returns the gRPC options that trace forwarded calls with tp and
// carry the trace context across regions (W3C traceparent), without
// touching OpenTelemetry's global propagator.
func tracingClient(tp trace.TracerProvider) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{})))
}

func tracingServer(tp trace.TracerProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{})))
}

const tracerName = "github.com/flypg/flypg"

// sessionHeaders carries the trace context of a statement that travels on
// a session, where no per-call metadata exists.
func sessionHeaders(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	return carrier
}

// sessionUnit gives each statement that arrives on a session the server
// span a call would have had, as a child of the caller's trace.
func sessionUnit(tp trace.TracerProvider) func(context.Context, map[string]string) (context.Context, func(error)) {
	tracer := tp.Tracer(tracerName)
	return func(ctx context.Context, headers map[string]string) (context.Context, func(error)) {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(headers))
		ctx, span := tracer.Start(ctx, "flypg.forward.v1.Executor/Exec", trace.WithSpanKind(trace.SpanKindServer))
		return ctx, func(err error) {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, status.Convert(err).Message())
			}
			span.End()
		}
	}
}
