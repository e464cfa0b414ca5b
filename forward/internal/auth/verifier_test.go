package auth

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/flypg/flypg/forward/protocol"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	methodCheck = healthpb.Health_Check_FullMethodName
	methodList  = healthpb.Health_List_FullMethodName
)

// TestEndToEnd drives a real gRPC server through the interceptors.
func TestEndToEnd(t *testing.T) {
	type tc struct {
		name      string
		serverNow time.Duration // server clock offset from the real clock
		extra     []string      // additional secrets accepted by the server
		secret    string        // client secret for NewCredentials; "" = no credentials
		header    func(t *testing.T) string
		replay    bool   // send header once successfully first, then again
		proto     string // protocol header value; "-" = none
		stream    bool   // use Watch instead of Check
		list      bool   // call List instead of Check
		wantCode  codes.Code
		wantMsg   string // substring, distinct per failure category
	}
	cases := []tc{
		{name: "correct secret", secret: testSecret, proto: testProto, wantCode: codes.OK},
		{name: "correct secret stream", secret: testSecret, proto: testProto, stream: true, wantCode: codes.OK},
		{name: "rotated secret accepted", secret: otherSecret, extra: []string{otherSecret}, proto: testProto, wantCode: codes.OK},
		{name: "wrong secret", secret: otherSecret, proto: testProto, wantCode: codes.Unauthenticated, wantMsg: "bad MAC"},
		{name: "wrong secret stream", secret: otherSecret, proto: testProto, stream: true, wantCode: codes.Unauthenticated, wantMsg: "bad MAC"},
		{name: "missing header", proto: testProto, wantCode: codes.Unauthenticated, wantMsg: "missing authorization header"},
		{name: "malformed header", proto: testProto, header: func(*testing.T) string { return "flypg-hmac v1 ts=12,nonce=x" },
			wantCode: codes.Unauthenticated, wantMsg: "malformed authorization header"},
		{name: "foreign scheme", proto: testProto, header: func(*testing.T) string { return "Bearer " + testSecret },
			wantCode: codes.Unauthenticated, wantMsg: "malformed authorization header"},
		{name: "unsupported version", proto: testProto, header: func(*testing.T) string { return "flypg-hmac v2 whatever" },
			wantCode: codes.Unauthenticated, wantMsg: `unsupported version "v2"`},
		{name: "old timestamp", secret: testSecret, serverNow: 5 * time.Minute, proto: testProto,
			wantCode: codes.Unauthenticated, wantMsg: "in the past"},
		{name: "future timestamp", secret: testSecret, serverNow: -5 * time.Minute, proto: testProto,
			wantCode: codes.Unauthenticated, wantMsg: "in the future"},
		{name: "replayed header", proto: testProto, replay: true,
			header:   func(t *testing.T) string { return captureHeader(t, testSecret, methodCheck) },
			wantCode: codes.Unauthenticated, wantMsg: "replayed nonce"},
		{name: "header bound to another method", proto: testProto, list: true,
			header:   func(t *testing.T) string { return captureHeader(t, testSecret, methodCheck) },
			wantCode: codes.Unauthenticated, wantMsg: "bad MAC for " + methodList},
		{name: "protocol mismatch", secret: testSecret, proto: "2",
			wantCode: codes.FailedPrecondition, wantMsg: `client speaks protocol "2", server speaks protocol "1"`},
		{name: "protocol missing", secret: testSecret, proto: "-",
			wantCode: codes.FailedPrecondition, wantMsg: `client sent no flypg-protocol header; server speaks protocol "1"`},
	}

	// Messages must let an operator tell the categories apart.
	for i, a := range cases {
		for _, b := range cases[i+1:] {
			if a.wantMsg != "" && b.wantMsg != "" && a.wantMsg != b.wantMsg &&
				(strings.Contains(a.wantMsg, b.wantMsg) || strings.Contains(b.wantMsg, a.wantMsg)) &&
				!(strings.HasPrefix(a.wantMsg, "bad MAC") && strings.HasPrefix(b.wantMsg, "bad MAC")) {
				t.Fatalf("cases %q and %q expect overlapping messages", a.name, b.name)
			}
		}
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			offset := c.serverNow
			v, err := NewVerifier(testSecret, WithAdditionalSecrets(c.extra...),
				WithNow(func() time.Time { return time.Now().Add(offset) }))
			if err != nil {
				t.Fatal(err)
			}
			dial := startServer(t, v)

			var opts []grpc.DialOption
			if c.secret != "" {
				creds, err := NewCredentials(c.secret, false)
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, grpc.WithPerRPCCredentials(creds))
			}
			client := dial(t, opts...)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c.proto != "-" {
				ctx = WithProtocol(ctx, c.proto)
			}
			if c.header != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, AuthHeader, c.header(t))
			}

			call := func() error {
				switch {
				case c.stream:
					w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
					if err != nil {
						return err
					}
					_, err = w.Recv() // errors from the interceptor surface here
					return err
				case c.list:
					_, err := client.List(ctx, &healthpb.HealthListRequest{})
					return err
				default:
					_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
					return err
				}
			}
			if c.replay {
				if err := call(); err != nil {
					t.Fatalf("first use of the header: %v", err)
				}
			}
			err = call()
			st := status.Convert(err)
			if st.Code() != c.wantCode {
				t.Fatalf("code = %v (%v), want %v", st.Code(), err, c.wantCode)
			}
			if !strings.Contains(st.Message(), c.wantMsg) {
				t.Fatalf("message = %q, want it to contain %q", st.Message(), c.wantMsg)
			}
			for _, s := range []string{testSecret, otherSecret} {
				if strings.Contains(st.Message(), s) {
					t.Fatalf("error message reveals a secret: %q", st.Message())
				}
			}
		})
	}
}

func TestTimestampMessageSaysHowFar(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	h := captureHeaderAt(t, base, methodCheck)
	v, err := NewVerifier(testSecret, WithNow(func() time.Time { return base.Add(3*time.Minute + 7*time.Second) }))
	if err != nil {
		t.Fatal(err)
	}
	err = v.Verify(incoming(AuthHeader, h), methodCheck)
	if got := status.Convert(err).Message(); !strings.Contains(got, "3m7s in the past") || !strings.Contains(got, "±2m0s") {
		t.Fatalf("message %q does not say 3m7s in the past and the window", got)
	}
}

func TestWindowEdges(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		offset time.Duration
		ok     bool
	}{
		{-2 * time.Minute, true}, {2 * time.Minute, true},
		{-2*time.Minute - time.Second, false}, {2*time.Minute + time.Second, false},
	} {
		v, err := NewVerifier(testSecret, WithNow(func() time.Time { return base.Add(tc.offset) }))
		if err != nil {
			t.Fatal(err)
		}
		err = v.Verify(incoming(AuthHeader, captureHeaderAt(t, base, methodCheck)), methodCheck)
		if (err == nil) != tc.ok {
			t.Errorf("server clock %v from signer: err = %v, want ok=%v", tc.offset, err, tc.ok)
		}
	}
}

func TestDuplicateHeaderRejected(t *testing.T) {
	v, err := NewVerifier(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	h := captureHeader(t, testSecret, methodCheck)
	err = v.Verify(incoming(AuthHeader, h, AuthHeader, h), methodCheck)
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "sent 2 times") {
		t.Fatalf("got %v", err)
	}
}

func TestReplayCacheFull(t *testing.T) {
	clock := newFakeClock(time.Unix(1_700_000_000, 0))
	v, err := NewVerifier(testSecret, WithNow(clock.Now), WithReplayCacheSize(2))
	if err != nil {
		t.Fatal(err)
	}
	verify := func() error {
		return v.Verify(incoming(AuthHeader, captureHeaderAt(t, clock.Now(), methodCheck)), methodCheck)
	}
	for i := 0; i < 2; i++ {
		if err := verify(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	err = verify()
	// The refusal is typed: a client tells it from the detail, not the
	// message (see forward's failure classification).
	if status.Code(err) != codes.ResourceExhausted || protocol.Reason(err) != protocol.ReasonBusy {
		t.Fatalf("third call: got %v, want ResourceExhausted with reason %s", err, protocol.ReasonBusy)
	}
	// Once the first nonces leave the window they are swept and make room.
	clock.Set(clock.Now().Add(DefaultWindow + time.Second))
	if err := verify(); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if n := v.replay.len(); n != 1 {
		t.Fatalf("cache holds %d entries after sweep, want 1", n)
	}
}

// TestClockStepBack checks that a nonce swept after the clock moved forward
// cannot be replayed once the clock steps back.
func TestClockStepBack(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	clock := newFakeClock(t0)
	v, err := NewVerifier(testSecret, WithNow(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	old := captureHeaderAt(t, t0, methodCheck)
	if err := v.Verify(incoming(AuthHeader, old), methodCheck); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(3 * time.Minute)) // forward: the next call sweeps old's nonce
	if err := v.Verify(incoming(AuthHeader, captureHeaderAt(t, clock.Now(), methodCheck)), methodCheck); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(time.Minute)) // back: old's timestamp is in the window again
	err = v.Verify(incoming(AuthHeader, old), methodCheck)
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "clock moved backwards") {
		t.Fatalf("replay after clock step back: got %v", err)
	}
}

func TestConcurrentReplayAcceptedOnce(t *testing.T) {
	v, err := NewVerifier(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	ctx := incoming(AuthHeader, captureHeader(t, testSecret, methodCheck))
	const n = 32
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- v.Verify(ctx, methodCheck) }()
	}
	ok := 0
	for i := 0; i < n; i++ {
		if <-errs == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("header accepted %d times, want once", ok)
	}
}

func TestConstructorErrors(t *testing.T) {
	short := "tooshort"
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"short secret", func() error { _, err := NewVerifier(short); return err }, "secret #1 is 8 bytes, need at least 16"},
		{"short extra secret", func() error { _, err := NewVerifier(testSecret, WithAdditionalSecrets(short)); return err }, "secret #2 is 8 bytes"},
		{"short client secret", func() error { _, err := NewCredentials(short, false); return err }, "need at least 16"},
		{"bad window", func() error { _, err := NewVerifier(testSecret, WithWindow(0)); return err }, "window must be positive"},
		{"bad cache", func() error { _, err := NewVerifier(testSecret, WithReplayCacheSize(0)); return err }, "cache size must be positive"},
		{"nil clock", func() error { _, err := NewVerifier(testSecret, WithNow(nil)); return err }, "nil clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), short) {
				t.Fatalf("error reveals the secret: %v", err)
			}
		})
	}
}

func TestRequireTransportSecurity(t *testing.T) {
	for _, want := range []bool{true, false} {
		c, err := NewCredentials(testSecret, want)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.RequireTransportSecurity(); got != want {
			t.Errorf("RequireTransportSecurity() = %v, want %v", got, want)
		}
	}
}

func TestGetRequestMetadataNeedsMethod(t *testing.T) {
	c, err := NewCredentials(testSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRequestMetadata(context.Background()); err == nil {
		t.Fatal("signed without a method in the context")
	}
}

// captureHeaderAt signs with a fixed clock.
func captureHeaderAt(t testing.TB, at time.Time, fullMethod string) string {
	t.Helper()
	return signAt(t, testSecret, at, fullMethod)
}

// signAt signs a call of fullMethod with secret at a fixed time.
func signAt(t testing.TB, secret string, at time.Time, fullMethod string) string {
	t.Helper()
	c, err := newCredentials(secret, false, func() time.Time { return at }, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.sign(fullMethod)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestNoClockForStrangers: without the secret, a caller cannot tell a
// header outside the window from one inside it, so it cannot probe the
// server's clock.
func TestNoClockForStrangers(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	v, err := NewVerifier(testSecret, WithNow(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	msg := func(at time.Time) string {
		h := signAt(t, otherSecret, at, methodCheck)
		return status.Convert(v.Verify(incoming(AuthHeader, h), methodCheck)).Message()
	}
	inside := msg(t0)
	for _, at := range []time.Time{t0.Add(-time.Hour), t0.Add(time.Hour), time.Unix(0, 0)} {
		if got := msg(at); got != inside {
			t.Fatalf("a wrongly signed header at %v gets %q; inside the window it gets %q", at, got, inside)
		}
	}
}
