package integration

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/internal/testkit"
)

// Limits of the executor of TestFaultBadInput.
const (
	inputMaxRequest  = 256 << 10
	inputMaxResponse = 256 << 10
	inputStmtTimeout = time.Second
)

// insertStmt is a valid forwarded INSERT of key.
func insertStmt(key string) *forwardpb.Statement {
	return &forwardpb.Statement{
		Sql:  "INSERT INTO fault_writes (key) VALUES ($1)",
		Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Text{Text: key}}},
		Exec: true,
	}
}

func newUnit() *forwardpb.Unit {
	id := make([]byte, 16)
	rand.Read(id)
	return &forwardpb.Unit{RequestId: id, Attempt: 1}
}

// TestFaultBadInput sends the executor what a correct client never would —
// bad or replayed credentials, another protocol version, garbage bytes,
// malformed messages, oversized requests — and what applications get wrong
// — unknown functions, SQL syntax errors, statements past the timeout,
// results past the size limit, cancelled calls. Each gets a clear, typed
// error (a forward sentinel, a *pgconn.PgError, or the gRPC status code for
// raw calls), writes nothing, and leaves the executor healthy: the health
// service says SERVING and a normal write succeeds right after.
func TestFaultBadInput(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultConfig{executor: flypg.ExecutorConfig{
		MaxRequestBytes:  inputMaxRequest,
		MaxResponseBytes: inputMaxResponse,
		StatementTimeout: inputStmtTimeout,
	}})
	e.mustWrite("warm-up")
	ctx := context.Background()
	raw := newRawExecutor(t, e.execAddr)
	execMethod := forwardpb.Executor_Exec_FullMethodName

	// absent checks that a refused write left nothing on the primary.
	absent := func(t *testing.T, key string) {
		t.Helper()
		if n := e.at(t).onPrimary(key); n != 0 {
			t.Fatalf("refused write %s is on the primary %d times", key, n)
		}
	}

	t.Run("wrong or missing secret", func(t *testing.T) {
		e := e.at(t)
		for _, secret := range []string{"another-secret-0123456789", ""} {
			c, err := forward.NewClient(forward.ClientConfig{Target: e.execAddr, Secret: secret, Timeout: 2 * time.Second})
			noErr(t, err)
			db := c.OpenDB()
			_, err = db.ExecContext(ctx, "INSERT INTO fault_writes (key) VALUES ('intruder')")
			db.Close()
			c.Close()
			switch {
			case secret != "" && (!errors.Is(err, forward.ErrUnauthenticated) || !errors.Is(err, flypg.ErrUnauthenticated)):
				t.Errorf("secret %q: %v, want ErrUnauthenticated", secret, err)
			case secret == "" && !errors.Is(err, forward.ErrUnavailable):
				// A plaintext client never gets far enough to be told why.
				t.Errorf("no secret: %v, want ErrUnavailable", err)
			}
			if err != nil && strings.Contains(err.Error(), testkit.Secret) {
				t.Error("the secret appears in the error")
			}
		}
		// Raw gRPC: plaintext, with or without a forged header, and TLS
		// keyed from another secret never get a connection.
		for name, tc := range map[string]credentials.TransportCredentials{
			"plaintext":      insecure.NewCredentials(),
			"another secret": secretCredentials(t, "another-secret-0123456789"),
		} {
			cc, err := grpc.NewClient(e.execAddr, grpc.WithTransportCredentials(tc))
			noErr(t, err)
			api := forwardpb.NewExecutorClient(cc)
			for _, header := range []string{"", "flypg-hmac v1 ts=1,nonce=x,mac=y"} {
				cctx := callCtx(ctx, protocol.Version)
				if header != "" {
					cctx = metadata.AppendToOutgoingContext(cctx, "authorization", header)
				}
				_, err = api.Exec(cctx, &forwardpb.ExecRequest{Unit: newUnit(), Statement: insertStmt("intruder")})
				if status.Code(err) != codes.Unavailable {
					t.Errorf("raw call, %s, header %q: %v, want Unavailable (no connection)", name, header, err)
				}
			}
			cc.Close()
		}
		absent(t, "intruder")
		e.healthy(t.Name())
	})

	t.Run("other protocol version", func(t *testing.T) {
		e := e.at(t)
		// A client that speaks protocol 3.
		v3 := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			md, _ := metadata.FromOutgoingContext(ctx)
			md = md.Copy()
			md.Set(protocolHeader, "3")
			return invoker(metadata.NewOutgoingContext(ctx, md), method, req, reply, cc, opts...)
		}
		v3Stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			md, _ := metadata.FromOutgoingContext(ctx)
			md = md.Copy()
			md.Set(protocolHeader, "3")
			return streamer(metadata.NewOutgoingContext(ctx, md), desc, cc, method, opts...)
		}
		c, err := forward.NewClient(forward.ClientConfig{Target: e.execAddr, Secret: testkit.Secret, Timeout: 2 * time.Second,
			DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(v3), grpc.WithChainStreamInterceptor(v3Stream)}})
		noErr(t, err)
		defer c.Close()
		db := c.OpenDB()
		defer db.Close()
		_, err = db.ExecContext(ctx, "INSERT INTO fault_writes (key) VALUES ('v2')")
		if !errors.Is(err, forward.ErrProtocol) || !strings.Contains(err.Error(), `"3"`) {
			t.Errorf("protocol 3 client: %v, want ErrProtocol naming the version", err)
		}
		for _, version := range []string{"3", "", "1"} {
			_, err := raw.api.Exec(callCtx(ctx, version), &forwardpb.ExecRequest{Unit: newUnit(), Statement: insertStmt("v2")})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "protocol") {
				t.Errorf("raw call with protocol %q: %v, want FailedPrecondition about the protocol", version, err)
			}
		}
		absent(t, "v2")
		e.healthy(t.Name())
	})

	t.Run("garbage bytes", func(t *testing.T) {
		e := e.at(t)
		r := mrand.New(mrand.NewPCG(1, 2))
		methods := []string{execMethod, forwardpb.Executor_Call_FullMethodName, forwardpb.Executor_Resolve_FullMethodName}
		for i := 0; i < 60; i++ {
			method := methods[i%len(methods)]
			payload := make([]byte, 1+r.IntN(200))
			for j := range payload {
				payload[j] = byte(r.UintN(256))
			}
			var reply []byte
			err := raw.cc.Invoke(callCtx(ctx, protocol.Version), method, &payload, &reply, grpc.ForceCodec(rawBytes{}))
			switch status.Code(err) {
			case codes.Internal, codes.InvalidArgument:
			default:
				t.Fatalf("%d random bytes to %s: %v, want Internal (unparsable) or InvalidArgument", len(payload), method, err)
			}
		}
		// And on the transaction stream.
		stream, err := raw.cc.NewStream(callCtx(ctx, protocol.Version),
			&forwardpb.Executor_ServiceDesc.Streams[0], forwardpb.Executor_Tx_FullMethodName, grpc.ForceCodec(rawBytes{}))
		noErr(t, err)
		junk := []byte{0xff, 0xff, 0xff, 0x01, 0x02}
		stream.SendMsg(&junk)
		var reply []byte
		if err := stream.RecvMsg(&reply); status.Code(err) != codes.Internal && status.Code(err) != codes.InvalidArgument {
			t.Errorf("garbage on the transaction stream: %v", err)
		}
		e.healthy(t.Name())
	})

	t.Run("malformed messages", func(t *testing.T) {
		e := e.at(t)
		exec := func(req *forwardpb.ExecRequest) (*forwardpb.ExecResponse, error) {
			var md metadata.MD
			resp, err := raw.api.Exec(callCtx(ctx, protocol.Version), req, grpc.Trailer(&md))
			if status.Code(err) == codes.InvalidArgument {
				if got := md.Get("flypg-outcome"); len(got) > 0 && got[0] != "not-committed" {
					t.Errorf("a refused request says outcome %v", got)
				}
			}
			return resp, err
		}
		shortID := newUnit()
		shortID.RequestId = shortID.RequestId[:5]
		noKind := insertStmt("malformed-nokind")
		noKind.Args = []*forwardpb.Value{{}}
		tooFew := insertStmt("malformed-few")
		tooFew.Args = nil
		tooMany := insertStmt("malformed-many")
		tooMany.Args = append(tooMany.Args, &forwardpb.Value{Kind: &forwardpb.Value_Int64{Int64: 1}})
		badTime := insertStmt("malformed-time")
		badTime.Args = []*forwardpb.Value{{Kind: &forwardpb.Value_Time{Time: &forwardpb.Time{Seconds: 1, Nanos: -5, Offset: 1 << 30}}}}
		emptyArray := insertStmt("malformed-array")
		emptyArray.Args = []*forwardpb.Value{{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{}}}}
		for _, tc := range []struct {
			name string
			req  *forwardpb.ExecRequest
		}{
			{"no unit", &forwardpb.ExecRequest{Statement: insertStmt("malformed-nounit")}},
			{"short request ID", &forwardpb.ExecRequest{Unit: shortID, Statement: insertStmt("malformed-shortid")}},
			{"no statement", &forwardpb.ExecRequest{Unit: newUnit()}},
			{"argument without a kind", &forwardpb.ExecRequest{Unit: newUnit(), Statement: noKind}},
			{"too few arguments", &forwardpb.ExecRequest{Unit: newUnit(), Statement: tooFew}},
			{"too many arguments", &forwardpb.ExecRequest{Unit: newUnit(), Statement: tooMany}},
			{"garbage time", &forwardpb.ExecRequest{Unit: newUnit(), Statement: badTime}},
			{"empty array", &forwardpb.ExecRequest{Unit: newUnit(), Statement: emptyArray}},
		} {
			resp, err := exec(tc.req)
			switch {
			case status.Code(err) == codes.InvalidArgument:
			case err == nil && resp.GetError() != nil:
				// Passed on, and PostgreSQL refused it.
			default:
				t.Errorf("%s: %v %v, want InvalidArgument (or PostgreSQL's refusal)", tc.name, err, resp)
			}
		}
		for _, k := range []string{"malformed-nounit", "malformed-shortid", "malformed-nokind", "malformed-few", "malformed-many", "malformed-time", "malformed-array"} {
			absent(t, k)
		}

		// A transaction stream that does not start with BEGIN, or asks for
		// an isolation level that does not exist.
		for _, tc := range []struct {
			name  string
			first *forwardpb.TxRequest
		}{
			{"statement before BEGIN", &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Statement{Statement: insertStmt("malformed-tx1")}}},
			{"BEGIN without a statement", &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: &forwardpb.TxBegin{Unit: newUnit()}}}},
			{"unknown isolation", &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: &forwardpb.TxBegin{Unit: newUnit(), Isolation: "chaotic; DROP TABLE fault_writes", First: insertStmt("malformed-tx2")}}}},
		} {
			stream, err := raw.api.Tx(callCtx(ctx, protocol.Version))
			noErr(t, err)
			noErr(t, stream.Send(tc.first))
			if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
			}
		}
		absent(t, "malformed-tx1")
		absent(t, "malformed-tx2")
		e.healthy(t.Name())
	})

	t.Run("oversized request", func(t *testing.T) {
		e := e.at(t)
		big := strings.Repeat("x", 2*inputMaxRequest)
		_, err := raw.api.Exec(callCtx(ctx, protocol.Version), &forwardpb.ExecRequest{Unit: newUnit(), Statement: insertStmt(big)})
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("raw oversized request: %v, want ResourceExhausted", err)
		}
		err = e.replica.Exec("INSERT INTO fault_writes (key, note) VALUES (?, ?)", "oversized", big).Error
		if n := e.onPrimary("oversized"); n != 0 {
			t.Fatalf("an oversized request ran: %d rows", n)
		}
		e.healthy(t.Name())
		if !errors.Is(err, forward.ErrTooLarge) {
			if errors.Is(err, forward.ErrInDoubt) {
				t.Fatalf("a request over the executor's MaxRequestBytes, refused by its gRPC server before anything ran, is reported as forward.ErrInDoubt (\"may have committed\") instead of ErrTooLarge (\"nothing was committed\"): %v", err)
			}
			t.Fatalf("oversized request: %v, want ErrTooLarge", err)
		}
	})

	t.Run("unknown function", func(t *testing.T) {
		e := e.at(t)
		_, err := flypg.Declare[map[string]int, int]("no_such_function").Call(ctx, e.replica, map[string]int{"x": 1})
		if !errors.Is(err, flypg.ErrUnknownFunction) || !strings.Contains(err.Error(), "no_such_function") {
			t.Errorf("Call of an unknown function: %v, want ErrUnknownFunction naming it", err)
		}
		e.healthy(t.Name())
	})

	t.Run("syntax error", func(t *testing.T) {
		e := e.at(t)
		err := e.replica.Exec("INSERT INTO fault_writes (key) VALUESS (?)", "syntax").Error
		if sqlState(err) != "42601" {
			t.Errorf("syntax error: %v, want SQLSTATE 42601", err)
		}
		err = e.replica.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&faultWrite{Key: "syntax-tx"}).Error; err != nil {
				return err
			}
			return tx.Exec("UPDATE fault_writes SETT key = 'x'").Error
		})
		if sqlState(err) != "42601" {
			t.Errorf("syntax error in a transaction: %v, want SQLSTATE 42601", err)
		}
		absent(t, "syntax")
		absent(t, "syntax-tx")
		e.healthy(t.Name())
	})

	t.Run("statement timeout", func(t *testing.T) {
		e := e.at(t)
		start := time.Now()
		err := e.replica.Exec("INSERT INTO fault_writes (key) SELECT ? FROM pg_sleep(10)", "slow").Error
		took := time.Since(start)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Errorf("statement past the executor's StatementTimeout: %v, want SQLSTATE 57014", err)
		}
		if took > inputStmtTimeout+3*time.Second {
			t.Errorf("statement timeout %s took %s", inputStmtTimeout, took)
		}
		err = e.replica.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&faultWrite{Key: "slow-tx"}).Error; err != nil {
				return err
			}
			return tx.Exec("SELECT pg_sleep(10)").Error
		})
		if sqlState(err) != "57014" {
			t.Errorf("statement timeout in a transaction: %v, want SQLSTATE 57014", err)
		}
		absent(t, "slow")
		absent(t, "slow-tx")
		e.healthy(t.Name())
	})

	t.Run("result over MaxResponseBytes", func(t *testing.T) {
		e := e.at(t)
		// Results travel in parts, whatever their size (see TestResultsInParts);
		// the limit bounds one row. (A row over MaxRowBytes, 64 KiB more,
		// never leaves PostgreSQL's connection: see TestRowLimit.)
		huge := fmt.Sprintf("SELECT repeat('x', %d)", inputMaxResponse+32<<10)
		var rows []string
		err := e.replica.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&faultWrite{Key: "huge-tx"}).Error; err != nil {
				return err
			}
			return tx.Raw(huge).Scan(&rows).Error
		})
		// The transaction is rolled back: ErrTxAborted, whose cause names
		// the limit, says so as well as ErrTooLarge would.
		if !(errors.Is(err, forward.ErrTooLarge) || errors.Is(err, forward.ErrTxAborted)) || !strings.Contains(err.Error(), "limit") {
			t.Errorf("huge row in a transaction: %v, want ErrTooLarge or ErrTxAborted naming the limit", err)
		}
		absent(t, "huge-tx")
		// On its own a statement commits before its result is read, so
		// the error says it committed (here a read: nothing to commit).
		err = e.replica.Clauses(flypg.UsePrimary).Raw(huge).Scan(&rows).Error
		var ce *forward.CommittedError
		if !errors.As(err, &ce) && !errors.Is(err, forward.ErrTooLarge) {
			t.Errorf("huge row of a statement: %v, want a *forward.CommittedError or ErrTooLarge", err)
		}
		// A result far larger than the limit, in rows under it, arrives whole.
		err = e.replica.Transaction(func(tx *gorm.DB) error {
			return tx.Raw(fmt.Sprintf("SELECT repeat('x', 1000) FROM generate_series(1, %d)", 4*inputMaxResponse/1000)).Scan(&rows).Error
		})
		if err != nil || len(rows) != 4*inputMaxResponse/1000 {
			t.Errorf("result of %d small rows: %d rows, %v", 4*inputMaxResponse/1000, len(rows), err)
		}
		e.healthy(t.Name())
	})

	t.Run("cancelled call", func(t *testing.T) {
		e := e.at(t)
		for _, tc := range []struct {
			name, query string
			run         func(ctx context.Context) error
		}{
			{"statement", "pg_sleep(30.1)", func(ctx context.Context) error {
				// Its own unit; SET LOCAL lifts the executor's statement
				// timeout for this implicit transaction only.
				return e.replica.WithContext(ctx).Exec("SET LOCAL statement_timeout = 0; INSERT INTO fault_writes (key) SELECT 'cancel-stmt' FROM pg_sleep(30.1)").Error
			}},
			{"transaction", "pg_sleep(30.2)", func(ctx context.Context) error {
				return e.replica.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
					if err := tx.Exec("SET LOCAL statement_timeout = 0").Error; err != nil {
						return err
					}
					if err := tx.Create(&faultWrite{Key: "cancel-tx"}).Error; err != nil {
						return err
					}
					return tx.Exec("SELECT pg_sleep(30.2)").Error
				})
			}},
		} {
			cctx, cancel := context.WithCancel(ctx)
			res := make(chan error, 1)
			go func() { res <- tc.run(cctx) }()
			testkit.Eventually(t, 10*time.Second, func() bool {
				return e.sleepingOnPrimary(tc.query) > 0
			}, tc.name+" running on the primary")
			start := time.Now()
			cancel()
			err := <-res
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled %s: %v, want context.Canceled", tc.name, err)
			}
			if o := classifyWrite(err); o == outcomeUntyped || o == outcomeOK {
				t.Errorf("cancelled %s: %v is not a typed forwarding error", tc.name, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("cancelled %s returned after %s", tc.name, d)
			}
			testkit.Eventually(t, 5*time.Second, func() bool {
				return e.activeOnPrimary("%", tc.query) == 0
			}, "the cancelled query to leave the primary")
		}
		absent(t, "cancel-stmt")
		absent(t, "cancel-tx")
		e.healthy(t.Name())
	})

	// After all of it, a last look: every refused key is absent, and the
	// executor still serves.
	var n int64
	ok(t, e.plain.Table("fault_writes").Where("key LIKE 'malformed-%' OR key IN ?", []string{"intruder", "v2", "oversized", "syntax", "slow"}).Count(&n))
	if n != 0 {
		t.Errorf("%d rows of refused requests on the primary", n)
	}
	e.healthy(fmt.Sprintf("%s end", t.Name()))
}
