package forward_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
)

// remoteListener reports every accepted connection as coming from a
// non-loopback address, as a caller on another machine would.
type remoteListener struct{ net.Listener }

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}
}

// countingCalls counts the calls that reach the handler.
type countingCalls struct{ n atomic.Int64 }

func (c *countingCalls) HandleCall(context.Context, string, []byte) ([]byte, lsn.LSN, error) {
	c.n.Add(1)
	return []byte("ran"), 0, nil
}

// serveRegistered serves x on an application's own server, built with or
// without the executor's ServerOptions, on lis.
func serveRegistered(t *testing.T, x *executor.Executor, lis net.Listener, withOptions bool) {
	t.Helper()
	var opts []grpc.ServerOption
	if withOptions {
		opts = x.ServerOptions()
	}
	s := grpc.NewServer(opts...)
	x.Register(s)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
}

// TestRegisteredWithoutSecretServesLoopbackOnly: an executor without a
// secret on the application's own server (RegisterGRPC) refuses callers
// off loopback, call by call, with or without its ServerOptions.
func TestRegisteredWithoutSecretServesLoopbackOnly(t *testing.T) {
	calls := &countingCalls{}
	x, err := executor.New(context.Background(), executor.Config{AllowUnauthenticated: true, Calls: calls})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for _, withOptions := range []bool{false, true} {
		for _, remote := range []bool{false, true} {
			lis := testkit.Listen(t)
			addr := lis.Addr().String()
			if remote {
				lis = remoteListener{lis}
			}
			serveRegistered(t, x, lis, withOptions)
			api := forwardpb.NewExecutorClient(rawConn(t, addr, ""))
			before := calls.n.Load()
			resp, err := api.Call(protoCtx(), &forwardpb.CallRequest{Unit: &forwardpb.Unit{RequestId: id16(), Attempt: 1}, Name: "f"})
			_, execErr := api.Exec(protoCtx(), insertReq(id16(), 1, "", "remote"))
			ran := calls.n.Load() - before
			switch {
			case remote && (status.Code(err) != codes.Unauthenticated || status.Code(execErr) != codes.Unauthenticated || ran != 0):
				t.Errorf("options %v, remote caller: Call %v, Exec %v, handler ran %d times; want both refused as unauthenticated", withOptions, err, execErr, ran)
			case !remote && (err != nil || string(resp.GetPayload()) != "ran"):
				t.Errorf("options %v, loopback caller: %v %v", withOptions, resp, err)
			}
		}
	}
}

// TestArgValuesRefusedBeforeDecoding: a request with more argument values
// than MaxArgValues (an array of NULLs costs 4 bytes each on the wire and
// a hundred decoded) is refused from its bytes, on a call, on a session
// (which goes on) and on a transaction, saying that nothing ran.
func TestArgValuesRefusedBeforeDecoding(t *testing.T) {
	_, addr := serveExecutor(t, executor.Config{AllowUnauthenticated: true, MaxArgValues: 1000})
	api := forwardpb.NewExecutorClient(rawConn(t, addr, ""))
	nulls := func(n int) *forwardpb.Statement {
		a := &forwardpb.Array{ElemKind: forwardpb.Array_KIND_INT64}
		for range n {
			a.Elems = append(a.Elems, &forwardpb.Value{Kind: &forwardpb.Value_Null{Null: &forwardpb.Null{}}})
		}
		return &forwardpb.Statement{Sql: "SELECT $1::int[]", Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Array{Array: a}}}}
	}
	refused := func(code codes.Code, msg string) bool {
		return code == codes.ResourceExhausted && strings.Contains(msg, "MaxArgValues")
	}
	unit := func() *forwardpb.Unit { return &forwardpb.Unit{RequestId: id16(), Attempt: 1} }

	// Within the limit the request is decoded and goes on (to "no primary").
	_, err := api.Exec(protoCtx(), &forwardpb.ExecRequest{Unit: unit(), Statement: nulls(999)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("999 values: %v, want the executor's answer that it has no primary", err)
	}
	var md metadata.MD
	_, err = api.Exec(protoCtx(), &forwardpb.ExecRequest{Unit: unit(), Statement: nulls(1001)}, grpc.Trailer(&md))
	if st := status.Convert(err); !refused(st.Code(), st.Message()) || md.Get("flypg-outcome")[0] != "not-committed" {
		t.Fatalf("1001 values on a call: %v, trailer %v", err, md)
	}

	sess, err := api.Session(protoCtx())
	if err != nil {
		t.Fatal(err)
	}
	for seq, n := range map[uint64]int{7: 1001, 8: 1} {
		if err := sess.Send(&forwardpb.SessionRequest{Seq: seq, Exec: &forwardpb.ExecRequest{Unit: unit(), Statement: nulls(n)}}); err != nil {
			t.Fatal(err)
		}
		r, err := sess.Recv()
		if err != nil {
			t.Fatalf("session ended after statement %d: %v", seq, err)
		}
		st := r.GetStatus()
		if r.GetSeq() != seq || (n > 1000) != refused(codes.Code(st.GetCode()), st.GetMessage()) {
			t.Fatalf("session statement %d with %d values: %v", seq, n, r)
		}
	}
	sess.CloseSend()

	tx, err := api.Tx(protoCtx())
	if err != nil {
		t.Fatal(err)
	}
	tx.Send(&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: &forwardpb.TxBegin{Unit: unit(), First: nulls(1001)}}})
	if _, err := tx.Recv(); !refused(status.Code(err), status.Convert(err).Message()) {
		t.Fatalf("transaction: %v", err)
	}

	// A client cannot make the executor refuse: its unknown fields are
	// dropped before the handler sees the request.
	forged := &forwardpb.ExecRequest{Unit: unit(), Statement: nulls(1)}
	forged.ProtoReflect().SetUnknown(protowire.AppendString(protowire.AppendTag(nil, protowire.MaxValidNumber, protowire.BytesType), "forged"))
	if _, err := api.Exec(protoCtx(), forged); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("forged refusal: %v", err)
	}
}

// TestReceiveLimit: the gRPC server takes requests up to MaxRequestBytes
// plus a small margin, where the executor says itself that nothing ran,
// naming the limit; past that gRPC refuses them without receiving them
// whole, and the trailer says that the executor never read them.
func TestReceiveLimit(t *testing.T) {
	const limit = 64 << 10
	_, addr := serveExecutor(t, executor.Config{AllowUnauthenticated: true, MaxRequestBytes: limit})
	api := forwardpb.NewExecutorClient(rawConn(t, addr, ""))
	for _, tc := range []struct {
		size    int
		byGRPC  bool
		wantRun bool
	}{
		{limit - 1024, false, true},
		{limit + 1024, false, false},
		{2 * limit, true, false},
		{limit + 128<<10, true, false},
	} {
		req := insertReq(id16(), 1, "", strings.Repeat("x", tc.size))
		var md metadata.MD
		_, err := api.Exec(protoCtx(), req, grpc.Trailer(&md))
		want := protocol.Trailer{Outcome: protocol.OutcomeNotRun, Limit: "MaxRequestBytes"}
		if tc.byGRPC {
			want = protocol.Trailer{Unread: true}
		}
		switch got := protocol.ReadTrailer(md); {
		case tc.wantRun && status.Code(err) != codes.FailedPrecondition:
			t.Errorf("%d bytes: %v, want it to reach the executor", proto.Size(req), err)
		case !tc.wantRun && (status.Code(err) != codes.ResourceExhausted || got != want):
			t.Errorf("%d bytes: %v with trailer %+v, want ResourceExhausted with %+v", proto.Size(req), err, got, want)
		}
	}
}

// TestRowLimit: a result row over MaxRowBytes is refused from its length
// prefix, without buffering it; the statement's answer names the limit.
func TestRowLimit(t *testing.T) {
	const rowLimit = 1 << 20
	e := startEnv(t, func(x *executor.Config, _ *forward.ClientConfig) {
		x.MaxResponseBytes, x.MaxRowBytes = rowLimit/2, rowLimit
	})
	api := rawClient(t, e.addr, testkit.Secret)
	const rowBytes = 16 << 20
	stmt := &forwardpb.Statement{Sql: "SELECT repeat('x', $1)", Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Int64{Int64: rowBytes}}}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := api.Exec(protoCtx(), &forwardpb.ExecRequest{Unit: &forwardpb.Unit{RequestId: id16(), Attempt: 1}, Statement: stmt})
	runtime.ReadMemStats(&after)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "MaxRowBytes") {
		t.Fatalf("a row of %d bytes: %v, want the executor to refuse it by MaxRowBytes", rowBytes, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > rowBytes/2 {
		t.Errorf("the process allocated %d MiB while refusing a %d MiB row", alloc>>20, rowBytes>>20)
	}
	// In a transaction: rolled back, nothing to doubt.
	tx, err := e.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO items (name) VALUES ('row-limit')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT repeat('x', $1)`, rowBytes); err == nil || !strings.Contains(err.Error(), "MaxRowBytes") {
		t.Fatalf("in a transaction: %v", err)
	}
	tx.Rollback()
	if n := e.count(t, "name = 'row-limit'"); n != 0 {
		t.Fatal("the transaction committed")
	}
	// The executor goes on.
	if _, err := e.db.Exec(`INSERT INTO items (name) VALUES ('after-row-limit')`); err != nil {
		t.Fatalf("a write after the refused row: %v", err)
	}
}

// TestOwnTLSCertificate: an executor served on the application's own gRPC
// server with its own certificate (RegisterGRPC, the executor's options
// then the application's credentials) takes clients that trust that
// certificate and sign their calls with the secret (ClientConfig.TLS);
// other secrets and plaintext get nothing run.
func TestOwnTLSCertificate(t *testing.T) {
	calls := &countingCalls{}
	x, err := executor.New(context.Background(), executor.Config{Secret: testkit.Secret, Calls: calls})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	own := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}})
	s := grpc.NewServer(append(x.ServerOptions(), grpc.Creds(own))...)
	x.Register(s)
	addr := testkit.ServeGRPC(t, s)

	for _, tc := range []struct {
		name   string
		secret string
		tls    bool
		want   error
	}{
		{"the secret", testkit.Secret, true, nil},
		{"another secret", "another-secret-0123456789abcdef", true, forward.ErrUnauthenticated},
		{"no secret", "", true, forward.ErrUnauthenticated},
		{"TLS keyed from the secret", testkit.Secret, false, forward.ErrUnauthenticated}, // the executor's certificate is not the derived one
		{"plaintext", "", false, forward.ErrUnavailable},
	} {
		cfg := forward.ClientConfig{Target: addr, Secret: tc.secret, Timeout: 2 * time.Second}
		if tc.tls {
			cfg.TLS = &tls.Config{RootCAs: roots}
		}
		c, err := forward.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		before := calls.n.Load()
		_, _, err = c.Call(context.Background(), "f", nil)
		c.Close()
		ran := calls.n.Load() - before
		switch {
		case tc.want == nil && (err != nil || ran != 1):
			t.Errorf("%s: %v, ran %d times", tc.name, err, ran)
		case tc.want != nil && (!errors.Is(err, tc.want) || ran != 0):
			t.Errorf("%s: %v, ran %d times; want %v", tc.name, err, ran, tc.want)
		}
	}
}
