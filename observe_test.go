package flypg_test

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
	"github.com/flypg/flypg/fly"
)

func TestMetricsAndTraces(t *testing.T) {
	preg, rreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	e := startTwoRegions(t, func(p, r *flypg.Config) {
		p.Metrics, r.Metrics = preg, rreg
		p.TracerProvider, r.TracerProvider = tp, tp
	})
	ctx := context.Background()
	if err := e.primary.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	e.cluster.WaitReplicated(ctx)

	// A traced request in the replica region: its forwarded write and wait
	// become children of the request's span, and the executor's server
	// span joins the same trace across the "regions".
	reqCtx, req := tp.Tracer("test").Start(ctx, "request")
	if err := e.replica.WithContext(reqCtx).Create(&Widget{Name: "traced"}).Error; err != nil {
		t.Fatal(err)
	}
	req.End()

	if n := counterValue(t, rreg, "flypg_forwarded_total", map[string]string{"op": "create", "outcome": "ok"}); n != 1 {
		t.Fatalf("flypg_forwarded_total{op=create,outcome=ok} = %v, want 1", n)
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
	var server bool
	for _, s := range spans.Ended() {
		if s.SpanContext().TraceID() != traceID {
			continue
		}
		names = append(names, s.Name())
		if s.SpanKind() == trace.SpanKindServer && strings.Contains(s.Name(), "Executor/") {
			server = true
		}
	}
	joined := strings.Join(names, ",")
	for _, want := range []string{"flypg.forward create", "flypg.replication_wait", "flypg.forward.v1.Executor/"} {
		if !strings.Contains(joined, want) {
			t.Errorf("trace has no %q span; spans: %s", want, joined)
		}
	}
	if !server {
		t.Errorf("the executor's server span is not in the request's trace: %s", joined)
	}
}

// counterValue returns the value of the counter name with labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
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
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}
