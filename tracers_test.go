package flypg_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/lsn"
)

// recorder is a tracer implementing every tracer interface: it records
// which hooks ran, in order, and checks that every start hook's context
// reaches its end hook.
type recorder struct {
	mu       sync.Mutex
	events   []string
	looks    int
	executor flypg.ExecutorLoad
	headers  []map[string]string // what SessionUnit received
	rpcs     []string            // unary methods called
	errs     []error
}

type spanKey struct{}

func (r *recorder) add(ev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// start marks ctx with name; end checks the mark.
func (r *recorder) start(ctx context.Context, name string) context.Context {
	r.add("start " + name)
	return context.WithValue(ctx, spanKey{}, name)
}

func (r *recorder) end(ctx context.Context, name string, err error) {
	if got, _ := ctx.Value(spanKey{}).(string); got != name {
		r.mu.Lock()
		r.errs = append(r.errs, fmt.Errorf("end %s got the context of %q", name, got))
		r.mu.Unlock()
	}
	ev := "end " + name
	if err != nil {
		ev += " (error)"
	}
	r.add(ev)
}

func (r *recorder) TraceWrite(_ context.Context, ev flypg.WriteEvent) {
	r.add(fmt.Sprintf("write %s lsn>0=%v rpcs=%d", ev.Op, ev.LSN > 0, ev.RPCs))
}
func (r *recorder) TraceStatementStart(ctx context.Context, d flypg.StatementStart) context.Context {
	return r.start(ctx, fmt.Sprintf("statement %s %s write=%v", d.Op, d.Table, d.Write))
}
func (r *recorder) TraceStatementEnd(ctx context.Context, d flypg.StatementEnd) {
	name, _ := ctx.Value(spanKey{}).(string)
	if !strings.HasPrefix(name, "statement ") {
		name = "statement ?"
	}
	r.end(ctx, name, d.Err)
}
func (r *recorder) TraceWaitStart(ctx context.Context, d flypg.WaitStart) context.Context {
	if d.LSN == 0 {
		r.add("wait for LSN 0")
	}
	return r.start(ctx, "wait")
}
func (r *recorder) TraceWaitEnd(ctx context.Context, d flypg.WaitEnd) { r.end(ctx, "wait", d.Err) }
func (r *recorder) TraceCallStart(ctx context.Context, d flypg.CallStart) context.Context {
	return r.start(ctx, fmt.Sprintf("call %s in %s local=%v", d.Function, d.Region, d.Local))
}
func (r *recorder) TraceCallEnd(ctx context.Context, d flypg.CallEnd) {
	r.end(ctx, fmt.Sprintf("call %s in %s local=%v", d.Function, d.Region, d.Local), d.Err)
}
func (r *recorder) TraceReplay(lsn.Look) {
	r.mu.Lock()
	r.looks++
	r.mu.Unlock()
}
func (r *recorder) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		r.mu.Lock()
		r.rpcs = append(r.rpcs, method[strings.LastIndex(method, "/")+1:])
		r.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	})}
}
func (r *recorder) ServerOptions() []grpc.ServerOption { return nil }
func (r *recorder) SessionHeaders(ctx context.Context) map[string]string {
	if name, ok := ctx.Value(spanKey{}).(string); ok {
		return map[string]string{"x-span": name}
	}
	return nil
}
func (r *recorder) SessionUnit(ctx context.Context, headers map[string]string) (context.Context, func(error)) {
	r.mu.Lock()
	r.headers = append(r.headers, headers)
	r.mu.Unlock()
	return ctx, func(error) {}
}
func (r *recorder) TraceExecutor(x flypg.ExecutorLoad) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.executor = x
	return nil
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

func TestTracers(t *testing.T) {
	pr, rr := &recorder{}, &recorder{}
	var onWrite []string
	e := startTwoRegions(t, func(p, r *flypg.Config) {
		p.Tracers = []any{pr}
		r.Tracers = []any{rr}
		r.OnWrite = func(_ context.Context, ev flypg.WriteEvent) { onWrite = append(onWrite, ev.Op) }
	})
	ctx := context.Background()
	if err := e.primary.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := e.cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	greet, err := flypg.Register(e.pPlug, "greet", func(ctx context.Context, tx *gorm.DB, name string) (string, error) {
		return "hello " + name, tx.Create(&Widget{Name: "greeted " + name}).Error
	})
	if err != nil {
		t.Fatal(err)
	}
	rr.take()

	// A forwarded create: the statement brackets its wait; the write is
	// reported once, to the tracer and to OnWrite.
	if err := e.replica.Create(&Widget{Name: "traced"}).Error; err != nil {
		t.Fatal(err)
	}
	want := []string{"start statement create widgets write=true", "start wait", "end wait", "write create lsn>0=true rpcs=1", "end statement create widgets write=true"}
	if got := rr.take(); !slices.Equal(got, want) {
		t.Errorf("create: hooks\n%q\nwant\n%q", got, want)
	}

	// A call to the primary: bracketed, its RPC and its wait inside.
	out, err := greet.Call(ctx, e.replica, "ada")
	if err != nil || out != "hello ada" {
		t.Fatalf("call: %q, %v", out, err)
	}
	want = []string{"start call greet in iad local=false", "start wait", "end wait", "write call lsn>0=true rpcs=1", "end call greet in iad local=false"}
	if got := rr.take(); !slices.Equal(got, want) {
		t.Errorf("call: hooks\n%q\nwant\n%q", got, want)
	}
	// In-process in the primary region: bracketed, no write event.
	if _, err := greet.Call(ctx, e.primary, "bob"); err != nil {
		t.Fatal(err)
	}
	want = []string{"start call greet in iad local=true", "end call greet in iad local=true"}
	if got := pr.take(); !slices.Equal(got, want) {
		t.Errorf("in-process call: hooks\n%q\nwant\n%q", got, want)
	}

	// A failing statement ends its bracket with the error.
	err = e.replica.Create(&Widget{Name: "traced"}).Error // duplicate name
	if err == nil {
		t.Fatal("duplicate create succeeded")
	}
	got := rr.take()
	if len(got) < 2 || got[0] != "start statement create widgets write=true" || !slices.Contains(got, "end statement create widgets write=true (error)") {
		t.Errorf("failed create: hooks %q", got)
	}

	if !slices.Equal(onWrite, []string{"create", "call", "create"}) {
		t.Errorf("OnWrite saw %q", onWrite)
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if rr.looks == 0 {
		t.Error("no TraceReplay")
	}
	if !slices.Contains(rr.rpcs, "Call") {
		t.Errorf("the GRPCTracer's dial options did not see the call: %q", rr.rpcs)
	}
	if pr.executor == nil || rr.executor != nil {
		t.Errorf("TraceExecutor: primary %v, replica %v", pr.executor, rr.executor)
	}
	// Lone statements travel on sessions: the executor's SessionUnit got
	// the headers the client's SessionHeaders made from the statement's
	// context.
	var carried bool
	for _, h := range pr.headers {
		carried = carried || strings.HasPrefix(h["x-span"], "statement create")
	}
	if !carried {
		t.Errorf("SessionUnit never saw the statement's headers: %v", pr.headers)
	}
	if err := errors.Join(append(rr.errs, pr.errs...)...); err != nil {
		t.Error(err)
	}
}
