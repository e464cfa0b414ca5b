package flypgprom

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/lsn"
)

// Metrics are a plugin's Prometheus collectors. It implements
// flypg.WriteTracer, flypg.ReplayTracer, flypg.ReadModeTracer,
// flypg.GRPCTracer and flypg.ExecutorTracer.
type Metrics struct {
	forwarded *prometheus.CounterVec   // by op and outcome
	rpc       *prometheus.HistogramVec // by method and code
	wait      prometheus.Histogram
	timeouts  prometheus.Counter
	polls     *prometheus.CounterVec // by outcome
	readMode  *prometheus.GaugeVec   // by reason

	highest  atomic.Uint64              // highest commit LSN this node forwarded
	replayed atomic.Pointer[lsn.Status] // the tracker's last look
	reg      prometheus.Registerer
	labels   prometheus.Labels
}

var (
	_ flypg.WriteTracer    = (*Metrics)(nil)
	_ flypg.ReplayTracer   = (*Metrics)(nil)
	_ flypg.ReadModeTracer = (*Metrics)(nil)
	_ flypg.GRPCTracer     = (*Metrics)(nil)
	_ flypg.ExecutorTracer = (*Metrics)(nil)
)

// New registers flypg's collectors on reg, with constLabels (may be nil) on
// every one of them.
func New(reg prometheus.Registerer, constLabels prometheus.Labels) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("flypgprom: no Registerer (pass prometheus.DefaultRegisterer for the global one)")
	}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "flypg", Name: name, Help: help, ConstLabels: constLabels}
	}
	hist := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		o := opts(name, help)
		return prometheus.HistogramOpts{Namespace: o.Namespace, Name: o.Name, Help: o.Help, ConstLabels: o.ConstLabels, Buckets: buckets}
	}
	// Latencies span loopback (sub-millisecond) to cross-ocean (hundreds of
	// milliseconds) round trips.
	buckets := prometheus.ExponentialBuckets(0.0002, 2, 15)
	m := &Metrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts(opts("forwarded_total", "Forwarded writes (statements, transactions, calls) by operation and outcome.")), []string{"op", "outcome"}),
		rpc:       prometheus.NewHistogramVec(hist("forward_rpc_duration_seconds", "Round trips to the primary region's executor, by gRPC method and status code.", buckets), []string{"method", "code"}),
		wait:      prometheus.NewHistogram(hist("replication_wait_duration_seconds", "Time spent waiting for the local replica to replay a forwarded write.", buckets)),
		timeouts:  prometheus.NewCounter(prometheus.CounterOpts(opts("replication_wait_timeouts_total", "Waits for replication that ended before the replica replayed the write (the write committed)."))),
		polls:     prometheus.NewCounterVec(prometheus.CounterOpts(opts("tracker_polls_total", "Looks at the local replica's replay position, by outcome.")), []string{"outcome"}),
		readMode:  prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("reads_on_primary", "1 for the reason reads that would run on the local replica run on the primary now (replica unreachable, lagging), else 0.")), []string{"reason"}),
		reg:       reg,
		labels:    constLabels,
	}
	for _, reason := range callbacks.Reasons {
		m.readMode.WithLabelValues(reason).Set(0)
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
	for _, c := range []prometheus.Collector{m.forwarded, m.rpc, m.wait, m.timeouts, m.polls, m.readMode, lagBytes, lagSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("flypgprom: register: %w (two plugins on one registry need different constant labels)", err)
		}
	}
	return m, nil
}

func (m *Metrics) lagBytes() uint64 {
	st := m.replayed.Load()
	h := m.highest.Load()
	if st == nil || h <= uint64(st.Replayed) {
		return 0
	}
	return h - uint64(st.Replayed)
}

// TraceWrite counts a forwarded write and its wait.
func (m *Metrics) TraceWrite(_ context.Context, ev flypg.WriteEvent) {
	outcome := "ok"
	switch {
	case errors.Is(ev.Err, flypg.ErrReplicationTimeout):
		outcome = "replication_timeout"
		m.timeouts.Inc()
	case errors.As(ev.Err, new(*flypg.ReplicationError)):
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

// TraceReplay counts a look at the local replica and keeps its position
// for the lag gauges.
func (m *Metrics) TraceReplay(l lsn.Look) {
	if l.Err != nil {
		m.polls.WithLabelValues("error").Inc()
		return
	}
	m.polls.WithLabelValues("ok").Inc()
	st := l.Status
	m.replayed.Store(&st)
}

// DialOptions time the round trips to other nodes.
// TraceReadMode sets flypg_reads_on_primary: 1 for the current reason
// reads run on the primary, 0 for the others.
func (m *Metrics) TraceReadMode(mode callbacks.Mode) {
	for _, reason := range callbacks.Reasons {
		v := 0.0
		if mode.Primary && mode.Reason == reason {
			v = 1
		}
		m.readMode.WithLabelValues(reason).Set(v)
	}
}

func (m *Metrics) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(m.unary), grpc.WithChainStreamInterceptor(m.stream)}
}

// ServerOptions returns nil: the executor's load is read by TraceExecutor.
func (m *Metrics) ServerOptions() []grpc.ServerOption { return nil }

func (m *Metrics) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.rpc.WithLabelValues(shortMethod(method), status.Code(err).String()).Observe(time.Since(start).Seconds())
	return err
}

// stream times the opening of a stream; a transaction's round trips are
// counted by the forwarded-writes metrics.
func (m *Metrics) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
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

// TraceExecutor registers the gauges of the executor the node serves.
func (m *Metrics) TraceExecutor(x flypg.ExecutorLoad) error {
	opts := func(name, help string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Namespace: "flypg", Name: name, Help: help, ConstLabels: m.labels}
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(opts("executor_inflight_units", "Forwarded units (statements, transactions, calls) the executor is running."), func() float64 { return float64(x.InFlight()) }),
		prometheus.NewGaugeFunc(opts("executor_open_transactions", "Forwarded transactions holding a primary connection."), func() float64 { return float64(x.OpenTransactions()) }),
	} {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("flypgprom: register executor metrics: %w", err)
		}
	}
	return nil
}
