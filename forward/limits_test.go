package forward_test

// Tests of the executor's limits and construction that need no database:
// an executor without a primary answers every statement at once ("this
// node does not forward SQL"), which is all they need.

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// serveNoPrimary serves an executor without a primary on loopback.
func serveNoPrimary(t *testing.T, cfg executor.Config) (*executor.Executor, string) {
	t.Helper()
	cfg.AllowUnauthenticated = true
	return serveExecutor(t, cfg)
}

// openSession opens a session stream on the executor at addr, without
// credentials, closed when the test ends.
func openSession(t *testing.T, addr string) (forwardpb.Executor_SessionClient, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(protoCtx())
	t.Cleanup(cancel)
	stream, err := rawClient(t, addr, "").Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream, cancel
}

func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSessionRetainsNothingPerStatement sends many statements, each with a
// deadline, on one long-lived session stream: once they are answered, the
// executor holds nothing for them while the stream stays open (the unit's
// context, in particular, is released from the stream's).
func TestSessionRetainsNothingPerStatement(t *testing.T) {
	_, addr := serveNoPrimary(t, executor.Config{})
	stream, _ := openSession(t, addr)
	seq := uint64(0)
	run := func(n int) {
		for i := 0; i < n; i++ {
			seq++
			req := insertReq(id16(), 1, "", "x")
			if err := stream.Send(&forwardpb.SessionRequest{Seq: seq, Exec: req, TimeoutMicros: int64(time.Minute / time.Microsecond)}); err != nil {
				t.Fatal(err)
			}
			r, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetStatus() == nil {
				t.Fatalf("statement %d answered %v, want a refusal (no primary)", seq, r)
			}
		}
	}
	run(2000) // warm-up: pools, maps and buffers at their working size
	before := heapAfterGC()
	const n = 10000
	run(n)
	after := heapAfterGC()
	growth := int64(after) - int64(before)
	t.Logf("heap %d -> %d bytes over %d statements (%.1f bytes each)", before, after, n, float64(growth)/n)
	if growth > n*16 {
		t.Fatalf("the heap grew by %d bytes over %d statements on one session (%.0f bytes each): something is retained per statement", growth, n, float64(growth)/n)
	}
}

// TestSessionBackPressure: a client that sends statements and never reads
// the answers is held back by gRPC flow control once the session's byte
// budget is used up; the executor does not buffer it without bound (in
// requests, answers or goroutines).
func TestSessionBackPressure(t *testing.T) {
	_, addr := serveNoPrimary(t, executor.Config{SessionMaxBytes: 16 << 10})
	stream, cancel := openSession(t, addr)
	base := runtime.NumGoroutine()
	const total = 50000
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			req := insertReq(id16(), 1, "", strings.Repeat("x", 100))
			if err := stream.Send(&forwardpb.SessionRequest{Seq: uint64(i), Exec: req}); err != nil {
				done <- err
				return
			}
			sent.Add(1)
		}
		done <- nil
	}()
	// Wait until the sender makes no progress for a second: held back.
	last, still := int64(-1), time.Now()
	for time.Since(still) < time.Second {
		select {
		case err := <-done:
			t.Fatalf("the client sent all %d statements without reading an answer (%v): nothing held it back", total, err)
		case <-time.After(50 * time.Millisecond):
		}
		if n := sent.Load(); n != last {
			last, still = n, time.Now()
		}
	}
	goroutines := runtime.NumGoroutine() - base
	t.Logf("held back after %d statements; %d goroutines more than before", last, goroutines)
	if goroutines > 1000 {
		t.Fatalf("%d goroutines for a session whose client does not read: the executor buffers it", goroutines)
	}
	cancel()
	<-done
}

// TestNewExecutorChecksBeforeAcquiring: a configuration error is found
// before the executor opens its pool or starts anything, so nothing is
// left running.
func TestNewExecutorChecksBeforeAcquiring(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, cfg := range []executor.Config{
		{DurableDedup: true, DedupTable: "Bad Name"},
		{DurableDedup: true, DedupRetention: time.Second},
		{DedupWindow: time.Second},
	} {
		cfg.DSN = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
		cfg.AllowUnauthenticated = true
		if x, err := executor.New(context.Background(), cfg); err == nil {
			x.Close()
			t.Errorf("NewExecutor(%+v) accepted the configuration", cfg)
		}
	}
}

// TestDedupWindowMustCoverRetries: an executor must remember answers for
// as long as a client may retry or resolve a unit.
func TestDedupWindowMustCoverRetries(t *testing.T) {
	_, err := executor.New(context.Background(), executor.Config{AllowUnauthenticated: true, DedupWindow: protocol.RetryHorizon})
	if err == nil || !strings.Contains(err.Error(), "DedupWindow") {
		t.Fatalf("DedupWindow equal to the retry horizon: %v, want it refused", err)
	}
	x, err := executor.New(context.Background(), executor.Config{AllowUnauthenticated: true, DedupWindow: executor.MinDedupWindow})
	if err != nil {
		t.Fatal(err)
	}
	x.Close()
}

// TestPoolSizedForConcurrency: without pool_max_conns the executor's pool
// has room for the units an app has in flight, not one per CPU.
func TestPoolSizedForConcurrency(t *testing.T) {
	for dsn, want := range map[string]int32{
		"postgres://u@127.0.0.1/db":                        executor.DefaultPoolMaxConns,
		"postgres://u@127.0.0.1/db?pool_max_conns=7":       7,
		"host=127.0.0.1 user=u dbname=db":                  executor.DefaultPoolMaxConns,
		"host=127.0.0.1 user=u pool_max_conns=3 dbname=db": 3,
	} {
		pc, err := executor.PoolConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if pc.MaxConns != want {
			t.Errorf("PoolConfig(%q).MaxConns = %d, want %d", dsn, pc.MaxConns, want)
		}
	}
}

// TestInvalidUTF8FailsBeforeSending: SQL or a text argument that is not
// valid UTF-8 fails at once with PostgreSQL's own error (SQLSTATE 22021,
// as plain pgx gets from the server), nothing is sent, and the session
// the next statement travels on is unharmed.
func TestInvalidUTF8FailsBeforeSending(t *testing.T) {
	_, addr := serveNoPrimary(t, executor.Config{})
	c, db := openClient(t, forward.ClientConfig{Target: addr, Timeout: 5 * time.Second})
	ctx := context.Background()
	// A first statement opens the session.
	if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (1)`); !errors.Is(err, forward.ErrNotPrimary) {
		t.Fatalf("statement on an executor without a primary: %v", err)
	}
	rpcs := c.Stats().RPCs
	for name, run := range map[string]func() error{
		"sql": func() error {
			_, err := db.ExecContext(ctx, "INSERT INTO t VALUES ('caf\xe9')")
			return err
		},
		"argument": func() error {
			_, err := db.ExecContext(ctx, `INSERT INTO t VALUES ($1)`, "caf\xc3\x28")
			return err
		},
		"argument in an array": func() error {
			_, err := db.ExecContext(ctx, `INSERT INTO t VALUES ($1)`, []string{"ok", "\xff"})
			return err
		},
	} {
		start := time.Now()
		err := run()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "22021" {
			t.Errorf("%s: %v, want a *pgconn.PgError with SQLSTATE 22021", name, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v to fail", name, d)
		}
	}
	if n := c.Stats().RPCs - rpcs; n != 0 {
		t.Errorf("%d round trips for statements that cannot be sent", n)
	}
	start := time.Now()
	if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (2)`); !errors.Is(err, forward.ErrNotPrimary) {
		t.Fatalf("the next statement: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the next statement took %v: its session stalled", d)
	}
}

// TestRequestLimitsAreTyped: a request over the executor's receive limit,
// which its gRPC server refuses before the executor sees it, and one over
// the client's own send limit, which never leaves, both fail with
// ErrTooLarge (nothing ran) rather than as in doubt, alone or in a
// transaction. An executor without a primary would have answered
// ErrNotPrimary to anything that reached it.
func TestRequestLimitsAreTyped(t *testing.T) {
	const limit = 64 << 10
	_, addr := serveNoPrimary(t, executor.Config{MaxRequestBytes: limit})
	for _, tc := range []struct {
		name      string
		send      int // the client's MaxSendBytes, 0 for the default
		wantLimit string
	}{
		{"executor's receive limit", 0, "MaxRequestBytes"},
		{"client's send limit", 16 << 10, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, db := openClient(t, forward.ClientConfig{Target: addr, MaxSendBytes: tc.send, Timeout: 5 * time.Second})
			big := strings.Repeat("x", 4*limit)
			_, err := db.Exec(`INSERT INTO t VALUES ($1)`, big)
			var fe *forward.Error
			if !errors.As(err, &fe) || fe.Kind != forward.ErrTooLarge || fe.Limit != tc.wantLimit {
				t.Fatalf("alone: %v, want ErrTooLarge naming limit %q", err, tc.wantLimit)
			}
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := tx.Exec(`INSERT INTO t VALUES ($1)`, big); !errors.Is(err, forward.ErrTooLarge) && (tc.send == 0 && !errors.Is(err, forward.ErrTxAborted)) {
				t.Fatalf("in a transaction: %v, want ErrTooLarge", err)
			}
		})
	}
}
