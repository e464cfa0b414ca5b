package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/internal/testkit"
)

// attackBytes is the size of each unauthenticated request below.
const attackBytes = 16 << 20

// nullArrayRequest is the wire form of an ExecRequest whose argument is an
// array of NULLs, about size bytes: 4 bytes per element, over 100 once
// decoded. Built as bytes, so that the test does not pay the decoded cost.
func nullArrayRequest(size int) []byte {
	elem := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), nil))
	arr := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(forwardpb.Array_KIND_INT64))
	for len(arr) < size {
		arr = append(arr, elem...)
	}
	val := protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType), arr)
	stmt := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "INSERT INTO sec_writes (key) SELECT 'attack' FROM unnest($1::int[])")
	stmt = protowire.AppendBytes(protowire.AppendTag(stmt, 2, protowire.BytesType), val)
	unit := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), make([]byte, 16))
	unit = protowire.AppendVarint(protowire.AppendTag(unit, 2, protowire.VarintType), 1)
	req := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), unit)
	return protowire.AppendBytes(protowire.AppendTag(req, 2, protowire.BytesType), stmt)
}

// serverNameOnTheWire returns the server name a client holding
// testkit.Secret sends in the clear, as an observer of its traffic sees it.
func serverNameOnTheWire(t *testing.T) string {
	t.Helper()
	lis := testkit.Listen(t)
	seen := make(chan string, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			seen <- ""
			return
		}
		defer c.Close()
		tls.Server(c, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			seen <- h.ServerName
			return nil, errors.New("seen")
		}}).Handshake()
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	secretCredentials(t, testkit.Secret).ClientHandshake(context.Background(), "x", raw)
	return <-seen
}

// ownCertificate is a certificate of a key derived from nothing.
func ownCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "intruder"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// TestSecurityUnauthenticatedPeersHoldLittleMemory attacks a real
// flypg-executor process without the secret: four concurrent 16 MiB
// requests of each kind an attacker can send (gRPC with a forged
// authorization header, raw bytes, TLS with the server name seen on the
// wire and a certificate of its own) and eight connections that dribble
// a handshake one byte at a time. The executor's peak RSS grows by less
// than 64 MiB, the slow connections are closed within the handshake
// timeout, and a legitimate write succeeds right after.
func TestSecurityUnauthenticatedPeersHoldLittleMemory(t *testing.T) {
	t.Parallel()
	d := newSecDB(t)
	proc := startExecutorProcess(t, buildExecutor(t), d.dsn, "127.0.0.1:0")
	// It took the DSN from the environment, and says so.
	if log := proc.Log(); !strings.Contains(log, "from=$FLYPG_PRIMARY_DSN") {
		t.Errorf("the executor does not say where its DSN came from:\n%s", log)
	}
	db := forwarder(t, proc.addr, testkit.Secret)
	ctx := context.Background()
	noErr(t, insert(ctx, db, "warm-up"))
	base := procStatusKB(t, proc.pid(), "VmHWM")
	sni := serverNameOnTheWire(t)
	own := ownCertificate(t)
	req := nullArrayRequest(attackBytes)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	report := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// attack runs fn on a new connection to the executor, concurrently.
	attack := func(fn func(c net.Conn)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", proc.addr)
			if err != nil {
				report("dial: %v", err)
				return
			}
			defer c.Close()
			fn(c)
		}()
	}
	// pour writes n bytes to c in 64 KiB pieces until done or refused.
	pour := func(c net.Conn, n int) {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < n; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}
	for i := 0; i < 4; i++ {
		wg.Add(1)
		// gRPC in plaintext with a forged header: what took the HMAC-only
		// executor to gigabytes.
		go func() {
			defer wg.Done()
			cc, err := grpc.NewClient(proc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				report("dial: %v", err)
				return
			}
			defer cc.Close()
			cctx := metadata.AppendToOutgoingContext(callCtx(ctx, protocol.Version), "authorization", "flypg-hmac v1 ts=1,nonce=AAAAAAAAAAAAAAAAAAAAAA,mac=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
			cctx, cancel := context.WithTimeout(cctx, 30*time.Second)
			defer cancel()
			var reply []byte
			if err := cc.Invoke(cctx, forwardpb.Executor_Exec_FullMethodName, &req, &reply, grpc.ForceCodec(rawBytes{})); err == nil {
				report("a forged request was answered")
			}
		}()
		// Raw bytes after an HTTP/2 preface.
		attack(func(c net.Conn) {
			io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
			pour(c, attackBytes)
		})
		// TLS as far as an impostor gets, then application data.
		attack(func(raw net.Conn) {
			c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"h2"},
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &own, nil }})
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := c.Handshake(); err != nil {
				return // refused already
			}
			pour(c, attackBytes)
		})
	}
	closedAfter := make(chan time.Duration, 8)
	for i := 0; i < 8; i++ {
		attack(func(c net.Conn) {
			start := time.Now()
			closed := make(chan struct{})
			go func() {
				c.SetReadDeadline(time.Now().Add(executor.DefaultHandshakeTimeout + 30*time.Second))
				io.Copy(io.Discard, c)
				close(closed)
			}()
			// A TLS record header announcing 16 KiB, then a byte at a time.
			c.Write([]byte{0x16, 0x03, 0x01, 0x40, 0x00})
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-closed:
					closedAfter <- time.Since(start)
					return
				case <-tick.C:
					c.Write([]byte{0x01})
				}
			}
		})
	}
	wg.Wait()
	close(closedAfter)
	for _, p := range problems {
		t.Error(p)
	}
	for d := range closedAfter {
		if d > executor.DefaultHandshakeTimeout+5*time.Second {
			t.Errorf("a connection dribbling its handshake was held %v (handshake timeout %v)", d.Round(time.Millisecond), executor.DefaultHandshakeTimeout)
		}
	}
	peak := procStatusKB(t, proc.pid(), "VmHWM")
	t.Logf("executor peak RSS: %d MiB before the attack, %d MiB after (+%d KiB)", base>>10, peak>>10, peak-base)
	if grew := (peak - base) << 10; grew >= 64<<20 {
		t.Errorf("the executor's peak RSS grew by %d MiB under unauthenticated load; want < 64 MiB", grew>>20)
	}
	if err := insert(ctx, db, "after"); err != nil {
		t.Fatalf("legitimate write after the attack: %v", err)
	}
	if n := d.count(t, "attack"); n != 0 {
		t.Fatalf("%d rows of the attack", n)
	}
}

// TestSecurityIdleConnectionsAreBounded opens 3,000 idle connections to a
// real flypg-executor process: it refuses those over MaxConnections at
// once and closes the rest when their handshake times out, so its open
// file descriptors stay under 1,500; a legitimate write succeeds after.
func TestSecurityIdleConnectionsAreBounded(t *testing.T) {
	t.Parallel()
	const idle = 3000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < idle+500 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this test opens %d connections; RLIMIT_NOFILE is %d (%v)", idle, lim.Cur, err)
		}
		t.Skipf("this test opens %d connections; RLIMIT_NOFILE is %d", idle, lim.Cur)
	}
	d := newSecDB(t)
	proc := startExecutorProcess(t, buildExecutor(t), d.dsn, "127.0.0.1:0")
	db := forwarder(t, proc.addr, testkit.Secret)
	ctx := context.Background()
	noErr(t, insert(ctx, db, "warm-up"))

	stop := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		most := 0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			most = max(most, openFDs(proc.pid()))
			select {
			case <-stop:
				peak <- most
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	var conns []net.Conn
	refused := 0
	for i := 0; i < idle; i++ {
		c, err := net.DialTimeout("tcp", proc.addr, 5*time.Second)
		if err != nil {
			refused++
			continue
		}
		conns = append(conns, c)
	}
	// Each connection ends from the server's side: refused at once or
	// closed at the handshake timeout.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var longest time.Duration
	stillOpen := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(executor.DefaultHandshakeTimeout + 30*time.Second))
			_, err := io.Copy(io.Discard, c)
			mu.Lock()
			defer mu.Unlock()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				stillOpen++
			}
			longest = max(longest, time.Since(start))
		}()
	}
	wg.Wait()
	close(stop)
	most := <-peak
	t.Logf("%d connections (%d refused by the kernel); executor's peak open fds %d; the last closed %v after the first dial", len(conns), refused, most, longest.Round(time.Millisecond))
	if stillOpen > 0 {
		t.Errorf("%d idle connections still open %v after the handshake timeout", stillOpen, 30*time.Second)
	}
	if most >= 1500 {
		t.Errorf("the executor held %d open fds with %d idle connections; want < 1500", most, idle)
	}
	if err := insert(ctx, db, "after"); err != nil {
		t.Fatalf("legitimate write after the idle connections: %v", err)
	}
	// And a new client connects.
	if err := insert(ctx, forwarder(t, proc.addr, testkit.Secret), "new-client"); err != nil {
		t.Fatalf("new client after the idle connections: %v", err)
	}
}
