package integration

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/flypgotel"
	"github.com/flypg/flypg/flypgprom"
)

// TestObservabilityAdapters: flypgprom and flypgotel, given as tracers to
// both regions' plugins, count a forwarded write and trace it across the
// regions — the statement, its wait and the call as children of the
// caller's span, and the executor's server spans in the same trace.
func TestObservabilityAdapters(t *testing.T) {
	t.Parallel()
	preg, rreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	pm, err := flypgprom.New(preg, prometheus.Labels{"db": "test"})
	noErr(t, err)
	rm, err := flypgprom.New(rreg, nil)
	noErr(t, err)
	e := newEnvWith(t, envConfig{models: []any{&Widget{}}, plugins: func(p, r *flypg.Config) {
		p.Tracers = []any{pm, flypgotel.New(tp)}
		r.Tracers = []any{rm, flypgotel.New(tp)}
	}})
	echo, err := flypg.Register(e.pPlug, "echo", func(ctx context.Context, tx *gorm.DB, s string) (string, error) {
		return s, tx.Create(&Widget{Name: "echo " + s}).Error
	})
	noErr(t, err)

	// A traced request in the replica region.
	ctx, req := tp.Tracer("test").Start(context.Background(), "request")
	ok(t, e.replica.WithContext(ctx).Create(&Widget{Name: "traced"}))
	_, err = echo.Call(ctx, e.replica, "hi")
	noErr(t, err)
	req.End()

	for op, want := range map[string]float64{"create": 1, "call": 1} {
		if n := counterValue(t, rreg, "flypg_forwarded_total", map[string]string{"op": op, "outcome": "ok"}); n != want {
			t.Errorf("flypg_forwarded_total{op=%s,outcome=ok} = %v, want %v", op, n, want)
		}
	}
	for _, name := range []string{"flypg_forward_rpc_duration_seconds", "flypg_replication_wait_duration_seconds", "flypg_tracker_polls_total", "flypg_replay_lag_bytes", "flypg_replay_lag_seconds", "flypg_replication_wait_timeouts_total"} {
		if !gathered(t, rreg, name) {
			t.Errorf("replica registry has no %s", name)
		}
	}
	for _, name := range []string{"flypg_executor_inflight_units", "flypg_executor_open_transactions"} {
		if !gathered(t, preg, name) {
			t.Errorf("primary registry has no %s", name)
		}
	}

	traceID := req.SpanContext().TraceID()
	var names []string
	servers := 0
	for _, s := range spans.Ended() {
		if s.SpanContext().TraceID() != traceID {
			continue
		}
		names = append(names, s.Name())
		if s.SpanKind() == trace.SpanKindServer && strings.Contains(s.Name(), "Executor/") {
			servers++
		}
	}
	joined := strings.Join(names, ",")
	for _, want := range []string{"flypg.forward create", "flypg.replication_wait", "flypg.call echo", "flypg.forward.v1.Executor/Exec", "flypg.forward.v1.Executor/Call"} {
		if !strings.Contains(joined, want) {
			t.Errorf("trace has no %q span; spans: %s", want, joined)
		}
	}
	// The executor's server spans of the statement (on a session) and of
	// the call joined the request's trace across the "regions".
	if servers < 2 {
		t.Errorf("%d executor server spans in the request's trace, want 2: %s", servers, joined)
	}
}

// counterValue returns the value of the counter name with labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	noErr(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func gathered(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	noErr(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}
