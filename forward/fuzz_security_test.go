package forward_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/internal/testkit"
)

// These fuzz targets reach past the first refusal: each holds the
// credentials (or starts from inputs that do), so the fuzzer explores what
// an authenticated peer can send, against a real primary where SQL runs.
// CI runs each for a few seconds (scripts/test.sh); go test runs the seeds.

// FuzzAuthenticate dials a real executor end to end (TLS keyed from the
// fuzzed secrets, or plaintext) with fuzzed protocol and authorization
// headers. A call runs only with a secret the executor knows and the
// protocol it speaks.
func FuzzAuthenticate(f *testing.F) {
	const current, older = "fuzz-current-secret-0123456789", "fuzz-older-secret-0123456789"
	calls := &countingCalls{}
	_, addr := serveExecutor(f, executor.Config{Secret: current, OldSecrets: []string{older}, Calls: calls})
	f.Add(current, "", protocol.Version, "", false)
	f.Add("another-secret-0123456789abcdef", older, protocol.Version, "", false)
	f.Add(older, "", "1", "flypg-hmac v1 ts=1,nonce=x,mac=y", false)
	f.Add(current, "", protocol.Version, "Bearer "+current, true)
	f.Fuzz(func(t *testing.T, secret, old, version, header string, plaintext bool) {
		if !printable(version) || !printable(header) {
			return // gRPC would not send it
		}
		var tc credentials.TransportCredentials = insecure.NewCredentials()
		var olds []string
		if old != "" {
			olds = []string{old}
		}
		if !plaintext {
			var err error
			if tc, err = forward.TransportCredentials(secret, olds...); err != nil {
				return // the client refuses a short secret itself
			}
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tc))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		md := metadata.MD{}
		if version != "" {
			md.Set("flypg-protocol", version)
		}
		if header != "" {
			md.Set("authorization", header)
		}
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 10*time.Second)
		defer cancel()
		before := calls.n.Load()
		_, err = forwardpb.NewExecutorClient(cc).Call(ctx, &forwardpb.CallRequest{Unit: &forwardpb.Unit{RequestId: id16(), Attempt: 1}, Name: "f"})
		ran := calls.n.Load() - before
		known := !plaintext && (secret == current || secret == older || old == current || old == older)
		allowed := known && version == protocol.Version
		switch {
		case ran != 0 && !allowed:
			t.Fatalf("a call ran with secret %q/%q, plaintext %v, protocol %q", secret, old, plaintext, version)
		case !known && status.Code(err) != codes.Unavailable:
			t.Fatalf("without a known secret the call got %v; want no connection at all", err)
		case allowed && header == "" && (err != nil || ran != 1):
			t.Fatalf("a call with a known secret: %v, ran %d times", err, ran)
		}
	})
}

// printable reports whether s may be a gRPC header value.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// fuzzEnv is an executor on a real primary with a table the fuzz targets
// write request IDs to.
func fuzzEnv(f *testing.F) (*env, forwardpb.ExecutorClient) {
	e := startEnv(f, func(x *executor.Config, _ *forward.ClientConfig) {
		x.MaxArgValues = 64
		x.TxIdleTimeout = 2 * time.Second
	})
	if _, err := e.primary.Exec(context.Background(), `CREATE TABLE fuzz_rows (req bytea NOT NULL, note text)`); err != nil {
		f.Fatal(err)
	}
	return e, rawClient(f, e.addr, testkit.Secret)
}

// fuzzStatement builds one of a few statements from a fuzzed kind: an
// insert of req, a syntax error, a short sleep, arguments that do not
// fit, an argument without a kind, too many argument values.
func fuzzStatement(kind, arg byte, req []byte) *forwardpb.Statement {
	insert := &forwardpb.Statement{Sql: `INSERT INTO fuzz_rows (req, note) VALUES ($1, $2)`,
		Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Bytes{Bytes: req}}, {Kind: &forwardpb.Value_Text{Text: "x"}}}}
	switch kind % 6 {
	case 1:
		return &forwardpb.Statement{Sql: "INSRT INTO fuzz_rows"}
	case 2:
		return &forwardpb.Statement{Sql: "SELECT pg_sleep($1)", Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Float64{Float64: float64(arg%4) / 100}}}}
	case 3:
		insert.Args = insert.Args[:1]
	case 4:
		insert.Args[1] = &forwardpb.Value{}
	case 5:
		a := &forwardpb.Array{ElemKind: forwardpb.Array_KIND_TEXT}
		for range 65 {
			a.Elems = append(a.Elems, &forwardpb.Value{Kind: &forwardpb.Value_Text{Text: "x"}})
		}
		insert.Args[1] = &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: a}}
	}
	return insert
}

// rowsOf counts the rows written with request ID req.
func rowsOf(t *testing.T, e *env, req []byte) int {
	t.Helper()
	var n int
	if err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM fuzz_rows WHERE req = $1`, req).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// settles waits until the executor runs nothing and holds no transaction.
func settles(t *testing.T, x *executor.Executor) {
	t.Helper()
	if !testkit.Poll(10*time.Second, func() bool { return x.InFlight() == 0 && x.OpenTransactions() == 0 }) {
		t.Fatalf("%d units and %d transactions still running after the stream ended", x.InFlight(), x.OpenTransactions())
	}
}

// FuzzSessionSequence sends a fuzzed sequence of messages on one session:
// statements of every kind under a few request IDs (so some repeat, with
// other attempts and instances), cancels, reused and unknown statement
// numbers, tiny deadlines. Whatever the sequence, every answer is for a
// statement that was sent, no request ID runs twice, and when the stream
// ends nothing is left running.
func FuzzSessionSequence(f *testing.F) {
	e, api := fuzzEnv(f)
	f.Add([]byte{0, 1, 0, 0, 2, 1, 6, 1, 0, 1, 3, 2, 2, 4, 3, 5, 5, 0, 0, 6, 4})
	f.Add([]byte{0, 1, 0, 0, 1, 0, 0, 1, 4, 7, 1, 9, 1, 1, 1})
	f.Fuzz(func(t *testing.T, ops []byte) { sessionOps(t, e, api, ops) })
}

// sessionOps plays ops on a new session and checks the outcome.
func sessionOps(t *testing.T, e *env, api forwardpb.ExecutorClient, ops []byte) {
	{
		ctx, cancel := context.WithTimeout(protoCtx(), 30*time.Second)
		defer cancel()
		s, err := api.Session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		reqs := [3][]byte{id16(), id16(), id16()}
		sent := map[uint64]bool{}
		for i := 0; i+3 <= len(ops) && i < 90; i += 3 {
			kind, seq, arg := ops[i], uint64(ops[i+1]%8), ops[i+2]
			m := &forwardpb.SessionRequest{Seq: seq}
			switch kind % 8 {
			case 6:
				m.Cancel = true
			default:
				req := reqs[int(arg)%len(reqs)]
				u := &forwardpb.Unit{RequestId: req, Attempt: 1 + uint32(arg/8%3)}
				if arg&64 != 0 {
					u.Instance = e.exec.Instance()
				}
				m.Exec = &forwardpb.ExecRequest{Unit: u, Statement: fuzzStatement(kind, arg, req)}
				if kind%8 == 7 {
					m.TimeoutMicros = int64(arg) + 1
				}
				sent[seq] = true
			}
			if err := s.Send(m); err != nil {
				break
			}
		}
		s.CloseSend()
		for {
			r, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("session ended with %v", err)
			}
			if !sent[r.GetSeq()] {
				t.Fatalf("an answer to statement %d, which was never sent", r.GetSeq())
			}
		}
		settles(t, e.exec)
		for _, req := range reqs {
			if n := rowsOf(t, e, req); n > 1 {
				t.Fatalf("request %x ran %d times", req, n)
			}
		}
	}
}

// FuzzTxSequence drives one transaction stream with a fuzzed sequence:
// BEGIN (with a fuzzed isolation level and maybe COMMIT at once), then
// statements of every kind, COMMIT, ROLLBACK, a last statement, a second
// BEGIN. Its rows are on the primary exactly when the stream said it
// committed, and none otherwise; when it ends no transaction is left open.
func FuzzTxSequence(f *testing.F) {
	e, api := fuzzEnv(f)
	f.Add([]byte{0, 0, 0, 0, 0, 2})
	f.Add([]byte{1, 1, 0, 0, 1, 0, 2})
	f.Add([]byte{2, 0, 0, 3})
	f.Add([]byte{0, 0, 4, 5, 6, 0, 7})
	isolations := []string{"", "read committed", "repeatable read", "serializable", "chaos"}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) < 2 {
			return
		}
		ctx, cancel := context.WithTimeout(protoCtx(), 30*time.Second)
		defer cancel()
		s, err := api.Tx(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := id16()
		inserted, committed := 0, false
		// exchange sends m and reads its answer; false when the stream ended.
		exchange := func(m *forwardpb.TxRequest, isInsert bool) bool {
			if err := s.Send(m); err != nil {
				return false
			}
			r, err := s.Recv()
			if err != nil {
				return false
			}
			switch r.GetOutcome().(type) {
			case *forwardpb.TxResponse_Result:
				if isInsert {
					inserted++
				}
			case *forwardpb.TxResponse_Committed:
				if isInsert {
					inserted++
				}
				committed = true
			case *forwardpb.TxResponse_CommitLsn:
				committed = true
			}
			return !committed
		}
		first := fuzzStatement(ops[1]%2*1, ops[1], req) // an insert or a syntax error
		begin := &forwardpb.TxBegin{Unit: &forwardpb.Unit{RequestId: req, Attempt: 1}, Isolation: isolations[int(ops[0])%len(isolations)], First: first, Commit: ops[0]&8 != 0}
		live := exchange(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: begin}}, ops[1]%2 == 0)
		for i := 2; live && i < len(ops) && i < 40; i++ {
			var m *forwardpb.TxRequest
			isInsert := false
			switch op := ops[i] % 8; op {
			case 0, 1, 4, 5:
				st := fuzzStatement(op%2+op/4*2, ops[i], req)
				isInsert = op%2 == 0 && op/4 == 0
				m = &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Statement{Statement: st}}
			case 2:
				m = &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Commit{Commit: &forwardpb.TxCommit{}}}
			case 3:
				m = &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Rollback{Rollback: &forwardpb.TxRollback{}}}
			case 6:
				m = &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Last{Last: fuzzStatement(0, 0, req)}}
				isInsert = true
			case 7:
				m = &forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: proto.Clone(begin).(*forwardpb.TxBegin)}}
			}
			live = exchange(m, isInsert)
		}
		s.CloseSend()
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
		settles(t, e.exec)
		n := rowsOf(t, e, req)
		switch {
		case !committed && n != 0:
			t.Fatalf("%d rows of a transaction that did not report a commit", n)
		case committed && n != inserted:
			t.Fatalf("committed with %d rows on the primary; %d inserts succeeded", n, inserted)
		}
	})
}

// FuzzArgBinding binds a fuzzed argument (any Value the protocol can
// carry, decoded from fuzzed bytes) to a parameter of each of a range of
// real column types on a primary. The executor answers with a result, an
// InvalidArgument refusal or PostgreSQL's error — never a broken
// connection — and serves the next statement.
func FuzzArgBinding(f *testing.F) {
	_, api := fuzzEnv(f)
	types := []string{"int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar(3)", "bytea", "bool",
		"date", "timestamp", "timestamptz", "time", "interval", "uuid", "json", "jsonb", "inet", "cidr",
		"int4[]", "text[]", "int8[][]", "money", "point", "int4range"}
	seed := func(col byte, v *forwardpb.Value) {
		b, err := proto.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(col, b)
	}
	seed(0, &forwardpb.Value{Kind: &forwardpb.Value_Int64{Int64: 1 << 40}})
	seed(6, &forwardpb.Value{Kind: &forwardpb.Value_Text{Text: "hello"}})
	seed(8, &forwardpb.Value{Kind: &forwardpb.Value_Bytes{Bytes: []byte{0, 1, 2}}})
	seed(12, &forwardpb.Value{Kind: &forwardpb.Value_Time{Time: &forwardpb.Time{Seconds: 1_700_000_000, Offset: 3600}}})
	seed(14, &forwardpb.Value{Kind: &forwardpb.Value_Duration{Duration: int64(time.Hour)}})
	seed(15, &forwardpb.Value{Kind: &forwardpb.Value_Text{Text: "00000000-0000-0000-0000-000000000001"}})
	seed(20, &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: forwardpb.Array_KIND_INT64,
		Elems: []*forwardpb.Value{{Kind: &forwardpb.Value_Int64{Int64: 1}}, {Kind: &forwardpb.Value_Null{Null: &forwardpb.Null{}}}}}}})
	seed(22, &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: forwardpb.Array_KIND_ARRAY,
		Elems: []*forwardpb.Value{{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: forwardpb.Array_KIND_INT64, Elems: []*forwardpb.Value{{Kind: &forwardpb.Value_Int64{Int64: 2}}}}}}}}}})
	seed(3, &forwardpb.Value{Kind: &forwardpb.Value_Float32{Float32: 1.5}})
	f.Fuzz(func(t *testing.T, col byte, b []byte) {
		var v forwardpb.Value
		if proto.Unmarshal(b, &v) != nil {
			return
		}
		typ := types[int(col)%len(types)]
		ctx, cancel := context.WithTimeout(protoCtx(), 10*time.Second)
		defer cancel()
		st := &forwardpb.Statement{Sql: "SELECT $1::" + typ, Args: []*forwardpb.Value{&v}}
		resp, err := api.Exec(ctx, &forwardpb.ExecRequest{Unit: &forwardpb.Unit{RequestId: id16(), Attempt: 1}, Statement: st})
		switch code := status.Code(err); {
		case err == nil && resp.GetError() != nil:
			if pg := resp.GetError(); pg.GetCode() == "" {
				t.Fatalf("%s: a PostgreSQL error without a code: %v", typ, pg)
			}
		case err == nil:
		case code == codes.InvalidArgument, code == codes.ResourceExhausted:
		default:
			t.Fatalf("binding %v to %s: %v; want a result, a refusal or PostgreSQL's error", &v, typ, err)
		}
		// The executor and its primary connections still serve.
		ok := &forwardpb.Statement{Sql: "SELECT 1"}
		if resp, err := api.Exec(ctx, &forwardpb.ExecRequest{Unit: &forwardpb.Unit{RequestId: id16(), Attempt: 1}, Statement: ok}); err != nil || resp.GetError() != nil {
			t.Fatalf("SELECT 1 after binding %v to %s: %v %v", &v, typ, err, resp.GetError())
		}
	})
}
