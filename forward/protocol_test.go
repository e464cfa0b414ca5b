package forward_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/auth"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
)

// rawClient talks to the executor with the generated stubs, to send what
// the driver never would: the same request ID twice, stale instances.
func rawClient(t testing.TB, addr, secret string) forwardpb.ExecutorClient {
	t.Helper()
	return forwardpb.NewExecutorClient(rawConn(t, addr, secret))
}

// rawConn dials the executor with the transport of a client holding
// secret (none: plaintext).
func rawConn(t testing.TB, addr, secret string) *grpc.ClientConn {
	t.Helper()
	tc := insecure.NewCredentials()
	if secret != "" {
		var err error
		if tc, err = forward.TransportCredentials(secret); err != nil {
			t.Fatal(err)
		}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func protoCtx() context.Context {
	return auth.WithProtocol(context.Background(), protocol.Version)
}

func id16() []byte {
	b := make([]byte, 16)
	rand.Read(b)
	return b
}

func insertReq(id []byte, attempt uint32, instance, name string) *forwardpb.ExecRequest {
	return &forwardpb.ExecRequest{
		Unit:      &forwardpb.Unit{RequestId: id, Attempt: attempt, Instance: instance},
		Statement: &forwardpb.Statement{Sql: `INSERT INTO items (name) VALUES ($1) RETURNING id`, Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Text{Text: name}}}},
	}
}

func TestDuplicateRequestIDRunsOnce(t *testing.T) {
	e := startEnv(t)
	api := rawClient(t, e.addr, testkit.Secret)
	ctx := protoCtx()
	id := id16()
	first, err := api.Exec(ctx, insertReq(id, 1, "", "once"))
	if err != nil || first.GetError() != nil {
		t.Fatalf("first: %v %v", err, first.GetError())
	}
	// A retry after a lost reply: same ID, names the executor that ran it.
	again, err := api.Exec(ctx, insertReq(id, 2, first.GetInstance(), "once"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetReplayed() || again.GetCommitLsn() != first.GetCommitLsn() || string(again.GetResult().GetRows()) != string(first.GetResult().GetRows()) {
		t.Fatalf("retry was not answered from the first attempt: %+v", again)
	}
	if n := e.count(t, "name = 'once'"); n != 1 {
		t.Fatalf("%d rows after a retried insert, want 1", n)
	}

	// Concurrent duplicates: one runs, the others wait for it.
	id = id16()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := api.Exec(ctx, insertReq(id, 1, "", "burst")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := e.count(t, "name = 'burst'"); n != 1 {
		t.Fatalf("%d rows after concurrent duplicates, want 1", n)
	}
}

func TestRetryOfUnknownIDIsInDoubtUnlessSameInstance(t *testing.T) {
	e := startEnv(t)
	api := rawClient(t, e.addr, testkit.Secret)
	ctx := protoCtx()
	// A retry naming another (e.g. restarted) instance: refusing to run it
	// is the only safe answer.
	var md metadata.MD
	_, err := api.Exec(ctx, insertReq(id16(), 2, "someone-else", "ghost"), grpc.Trailer(&md))
	if status.Code(err) != codes.FailedPrecondition || md.Get("flypg-outcome")[0] != "unknown" {
		t.Fatalf("retry of an unknown ID from another instance: %v %v", err, md)
	}
	if e.count(t, "name = 'ghost'") != 0 {
		t.Fatal("an in-doubt retry ran")
	}
	// Naming this instance: the first attempt never arrived, so it runs.
	resp, err := api.Exec(ctx, insertReq(id16(), 2, e.exec.Instance(), "late"))
	if err != nil || resp.GetReplayed() {
		t.Fatalf("retry of a never-seen ID on the same instance: %v %+v", err, resp)
	}
	if e.count(t, "name = 'late'") != 1 {
		t.Fatal("row missing")
	}
}

func TestAuthRefusals(t *testing.T) {
	e := startEnv(t)
	tests := []struct {
		name   string
		secret string
	}{
		{"wrong secret", "another-secret-of-16+"},
		{"no credentials", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := rawClient(t, e.addr, tt.secret)
			// The TLS handshake fails: no connection, nothing sent.
			_, err := api.Exec(protoCtx(), insertReq(id16(), 1, "", "intruder"))
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("err = %v, want Unavailable", err)
			}
			if strings.Contains(err.Error(), testkit.Secret) {
				t.Fatal("the secret appears in the error")
			}
			_, db := openClient(t, forward.ClientConfig{Target: e.addr, Secret: tt.secret, Timeout: time.Second})
			_, err = db.Exec(`INSERT INTO items (name) VALUES ('intruder')`)
			switch {
			case tt.secret != "" && !errors.Is(err, forward.ErrUnauthenticated):
				t.Fatalf("driver err = %v, want ErrUnauthenticated", err)
			case tt.secret == "" && !errors.Is(err, forward.ErrUnavailable):
				// A plaintext client cannot even be told why.
				t.Fatalf("driver err = %v, want ErrUnavailable", err)
			}
		})
	}
	if e.count(t, "name = 'intruder'") != 0 {
		t.Fatal("an unauthenticated statement ran")
	}
	// Another protocol version is named in the refusal.
	api := rawClient(t, e.addr, testkit.Secret)
	_, err := api.Exec(auth.WithProtocol(context.Background(), "7"), insertReq(id16(), 1, "", "v7"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `"7"`) {
		t.Fatalf("protocol mismatch: %v", err)
	}
}

func TestExecutorRefusesUnauthenticatedOffLoopback(t *testing.T) {
	if _, err := executor.New(context.Background(), executor.Config{}); err == nil || !strings.Contains(err.Error(), "Secret") {
		t.Fatalf("executor without a secret: %v", err)
	}
	x, err := executor.New(context.Background(), executor.Config{AllowUnauthenticated: true})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	lis, err := net.Listen("tcp", ":0") // all interfaces
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := x.Serve(lis); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("Serve on %s without a secret: %v", lis.Addr(), err)
	}
}

func TestHealth(t *testing.T) {
	e := startEnv(t)
	h := healthpb.NewHealthClient(rawConn(t, e.addr, testkit.Secret))
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		var r *healthpb.HealthCheckResponse
		var err error
		if !testkit.Poll(10*time.Second, func() bool {
			r, err = h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "flypg.forward.v1.Executor"})
			return err == nil && r.GetStatus() == want
		}) {
			t.Fatalf("health never became %v (last %v, %v)", want, r.GetStatus(), err)
		}
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)
	if err := e.db.Ping(); err != nil {
		t.Fatalf("driver ping: %v", err)
	}
	if err := e.cluster.Primary.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
	if err := e.db.Ping(); !errors.Is(err, forward.ErrNotPrimary) {
		t.Fatalf("driver ping with the primary down: %v", err)
	}
	// While the primary is down, statements fail cleanly and nothing is in doubt.
	_, err := e.db.Exec(`INSERT INTO items (name) VALUES ('down')`)
	var fe *forward.Error
	if !errors.As(err, &fe) || errors.Is(err, forward.ErrInDoubt) {
		t.Fatalf("insert with the primary down: %v", err)
	}
	if err := e.cluster.Primary.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)
	if _, err := e.db.Exec(`INSERT INTO items (name) VALUES ('up')`); err != nil {
		t.Fatalf("insert after the primary came back: %v", err)
	}

	// An executor pointed at a replica (in recovery) is not serving. It
	// starts NOT_SERVING, so the answer proves something only once the
	// health checker has looked at the database: it logs what it found.
	probed := make(chan struct{})
	var once sync.Once
	logger := slog.New(logHook(func(r slog.Record) {
		if strings.Contains(r.Message, "in recovery") {
			once.Do(func() { close(probed) })
		}
	}))
	_, addr := serveExecutor(t, executor.Config{DSN: e.cluster.Replicas[0].DSN(""), AllowUnauthenticated: true, HealthInterval: 50 * time.Millisecond, Logger: logger})
	cc2, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	h = healthpb.NewHealthClient(cc2)
	select {
	case <-probed:
	case <-time.After(10 * time.Second):
		t.Fatal("the executor on a replica never found its database in recovery")
	}
	r, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("executor on a replica: %v %v, want NOT_SERVING", r.GetStatus(), err)
	}
}

// logHook is a slog.Handler that hands every record to fn.
type logHook func(slog.Record)

func (h logHook) Enabled(context.Context, slog.Level) bool      { return true }
func (h logHook) Handle(_ context.Context, r slog.Record) error { h(r); return nil }
func (h logHook) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h logHook) WithGroup(string) slog.Handler                 { return h }

type calls struct{}

func (c calls) HandleCall(ctx context.Context, name string, payload []byte) ([]byte, lsn.LSN, error) {
	switch name {
	case "echo":
		return append([]byte("echo:"), payload...), 0, nil
	case "fail":
		return nil, 0, errors.New("it failed")
	}
	return nil, 0, forward.ErrUnknownFunction
}

func TestCall(t *testing.T) {
	e := startEnv(t, func(x *executor.Config, _ *forward.ClientConfig) { x.Calls = calls{} })
	out, _, err := e.client.Call(context.Background(), "echo", []byte("hi"))
	if err != nil || string(out) != "echo:hi" {
		t.Fatalf("echo: %q %v", out, err)
	}
	if _, _, err := e.client.Call(context.Background(), "nope", nil); !errors.Is(err, forward.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
	if _, _, err := e.client.Call(context.Background(), "fail", nil); err == nil || !strings.Contains(err.Error(), "it failed") {
		t.Fatalf("failing function: %v", err)
	}
}

func TestTransactionIdleTimeout(t *testing.T) {
	e := startEnv(t, func(x *executor.Config, _ *forward.ClientConfig) { x.TxIdleTimeout = 200 * time.Millisecond })
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO items (name) VALUES ('idle')`); err != nil {
		t.Fatal(err)
	}
	// Wait for the executor to give up on the transaction: its connection
	// leaves "idle in transaction".
	if n := e.idleInTransaction(t); n != 1 {
		t.Fatalf("%d connections idle in transaction with the transaction open, want 1", n)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return e.idleInTransaction(t) == 0 }, "the idle transaction to end")
	_, err = tx.Exec(`INSERT INTO items (name) VALUES ('idle2')`)
	if !errors.Is(err, forward.ErrTxAborted) {
		t.Fatalf("statement after the idle limit: %v, want ErrTxAborted", err)
	}
	// The error names the limit that ended the transaction.
	var fe *forward.Error
	if !errors.As(err, &fe) || fe.Limit != "TxIdleTimeout" || !strings.Contains(err.Error(), "TxIdleTimeout") {
		t.Fatalf("statement after the idle limit: %v, want one naming TxIdleTimeout", err)
	}
	tx.Rollback()
	if e.count(t, "name LIKE 'idle%'") != 0 {
		t.Fatal("rows of an expired transaction present")
	}
}
