package flypg

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/lsn"
)

// tracers are Config.Tracers (and Config.OnWrite) sorted by the interfaces
// they implement. Several tracers of one kind run in the order given; each
// start hook gets the context the previous one returned.
type tracers struct {
	writes     []WriteTracer
	statements []StatementTracer
	waits      []WaitTracer
	calls      []CallTracer
	replays    []ReplayTracer
	grpcs      []GRPCTracer
	sessions   []SessionTracer
	executors  []ExecutorTracer
	modes      []ReadModeTracer
}

type onWrite func(context.Context, WriteEvent)

func (f onWrite) TraceWrite(ctx context.Context, ev WriteEvent) { f(ctx, ev) }

func newTracers(cfg Config) (tracers, error) {
	var t tracers
	for i, v := range cfg.Tracers {
		implements := []bool{
			add(&t.writes, v), add(&t.statements, v), add(&t.waits, v), add(&t.calls, v),
			add(&t.replays, v), add(&t.grpcs, v), add(&t.sessions, v), add(&t.executors, v), add(&t.modes, v),
		}
		if !slices.Contains(implements, true) {
			return t, fmt.Errorf("flypg: config: Tracers[%d] (%T) implements none of the tracer interfaces", i, v)
		}
	}
	if cfg.OnWrite != nil {
		t.writes = append(t.writes, onWrite(cfg.OnWrite))
	}
	return t, nil
}

// add appends v to list if v is a T.
func add[T any](list *[]T, v any) bool {
	x, ok := v.(T)
	if ok {
		*list = append(*list, x)
	}
	return ok
}

// write reports a forwarded write.
func (t *tracers) write(ctx context.Context, ev WriteEvent) {
	for _, x := range t.writes {
		x.TraceWrite(ctx, ev)
	}
}

// event is callbacks' report of a forwarded write, as a WriteEvent.
func event(ev callbacks.Event) WriteEvent {
	return WriteEvent{Op: ev.Op, Table: ev.Table, Function: ev.Function, LSN: ev.LSN, Forward: ev.Forward, Wait: ev.Wait, Duration: ev.Duration, Err: ev.Err, NoAwait: ev.NoAwait, RPCs: ev.RPCs}
}

// startStatement is callbacks.Router.StartStatement, nil without
// statement tracers.
func (t *tracers) startStatement() func(context.Context, string, string, bool) (context.Context, func(error)) {
	if len(t.statements) == 0 {
		return nil
	}
	return func(ctx context.Context, op, table string, write bool) (context.Context, func(error)) {
		data := StatementStart{Op: op, Table: table, Write: write}
		for _, x := range t.statements {
			ctx = x.TraceStatementStart(ctx, data)
		}
		return ctx, func(err error) {
			for i := len(t.statements) - 1; i >= 0; i-- {
				t.statements[i].TraceStatementEnd(ctx, StatementEnd{Err: err})
			}
		}
	}
}

// startWait is callbacks.Router.StartWait, nil without wait tracers.
func (t *tracers) startWait() func(context.Context, lsn.LSN) (context.Context, func(error)) {
	if len(t.waits) == 0 {
		return nil
	}
	return func(ctx context.Context, l lsn.LSN) (context.Context, func(error)) {
		for _, x := range t.waits {
			ctx = x.TraceWaitStart(ctx, WaitStart{LSN: l})
		}
		start := time.Now()
		return ctx, func(err error) {
			data := WaitEnd{LSN: l, Waited: time.Since(start), Err: err}
			for i := len(t.waits) - 1; i >= 0; i-- {
				t.waits[i].TraceWaitEnd(ctx, data)
			}
		}
	}
}

// startCall brackets a call; end fills in data's outcome.
func (t *tracers) startCall(ctx context.Context, data CallStart) (context.Context, func(CallEnd)) {
	for _, x := range t.calls {
		ctx = x.TraceCallStart(ctx, data)
	}
	return ctx, func(end CallEnd) {
		end.Function, end.Region, end.Local = data.Function, data.Region, data.Local
		for i := len(t.calls) - 1; i >= 0; i-- {
			t.calls[i].TraceCallEnd(ctx, end)
		}
	}
}

// onLook is lsn.Config.OnLook, nil without replay tracers.
func (t *tracers) onLook() func(lsn.Look) {
	if len(t.replays) == 0 {
		return nil
	}
	return func(l lsn.Look) {
		for _, x := range t.replays {
			x.TraceReplay(l)
		}
	}
}

func (t *tracers) dialOptions() []grpc.DialOption {
	var opts []grpc.DialOption
	for _, x := range t.grpcs {
		opts = append(opts, x.DialOptions()...)
	}
	return opts
}

func (t *tracers) serverOptions() []grpc.ServerOption {
	var opts []grpc.ServerOption
	for _, x := range t.grpcs {
		opts = append(opts, x.ServerOptions()...)
	}
	return opts
}

// sessionHeaders is forward.ClientConfig.SessionHeaders, nil without
// session tracers.
func (t *tracers) sessionHeaders() func(context.Context) map[string]string {
	if len(t.sessions) == 0 {
		return nil
	}
	return func(ctx context.Context) map[string]string {
		var all map[string]string
		for _, x := range t.sessions {
			for k, v := range x.SessionHeaders(ctx) {
				if all == nil {
					all = map[string]string{}
				}
				all[k] = v
			}
		}
		return all
	}
}

// sessionUnit is executor.Config.SessionUnit, nil without session
// tracers.
func (t *tracers) sessionUnit() func(context.Context, map[string]string) (context.Context, func(error)) {
	if len(t.sessions) == 0 {
		return nil
	}
	return func(ctx context.Context, headers map[string]string) (context.Context, func(error)) {
		ends := make([]func(error), 0, len(t.sessions))
		for _, x := range t.sessions {
			var end func(error)
			ctx, end = x.SessionUnit(ctx, headers)
			ends = append(ends, end)
		}
		return ctx, func(err error) {
			for i := len(ends) - 1; i >= 0; i-- {
				if ends[i] != nil {
					ends[i](err)
				}
			}
		}
	}
}

// executor tells the executor tracers about x.
func (t *tracers) executor(x ExecutorLoad) error {
	for _, tr := range t.executors {
		if err := tr.TraceExecutor(x); err != nil {
			return fmt.Errorf("flypg: executor tracer: %w", err)
		}
	}
	return nil
}
