package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

const newSecret = "the-next-secret-after-rotation-42"

func mustKeyring(t testing.TB, secret string, older ...string) *Keyring {
	t.Helper()
	k, err := NewKeyring(secret, older...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// handshakeResult is what both ends of one connection saw.
type handshakeResult struct {
	clientErr, serverErr error
	serverCert           []byte // the certificate the client received
	clientCert           []byte // the certificate the server received
}

// handshake runs a TLS handshake between the two configurations over an
// in-memory pipe and exchanges one byte each way, so that a refusal the
// server sends after the client's side of the handshake completed (TLS 1.3
// verifies the client certificate last) reaches the client.
func handshake(t *testing.T, client, server *tls.Config) handshakeResult {
	t.Helper()
	lis := testkit.Listen(t)
	deadline := time.Now().Add(10 * time.Second)
	var r handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := lis.Accept()
		if err != nil {
			r.serverErr = err
			return
		}
		c.SetDeadline(deadline)
		srv := tls.Server(c, server)
		defer srv.Close()
		if r.serverErr = srv.Handshake(); r.serverErr != nil {
			return
		}
		if pc := srv.ConnectionState().PeerCertificates; len(pc) > 0 {
			r.clientCert = pc[0].Raw
		}
		var b [1]byte
		if _, r.serverErr = srv.Read(b[:]); r.serverErr == nil {
			_, r.serverErr = srv.Write(b[:])
		}
	}()
	func() {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			r.clientErr = err
			return
		}
		c.SetDeadline(deadline)
		cli := tls.Client(c, client)
		defer cli.Close()
		if r.clientErr = cli.Handshake(); r.clientErr != nil {
			return
		}
		if pc := cli.ConnectionState().PeerCertificates; len(pc) > 0 {
			r.serverCert = pc[0].Raw
		}
		if _, r.clientErr = cli.Write([]byte{7}); r.clientErr != nil {
			return
		}
		var b [1]byte
		_, r.clientErr = cli.Read(b[:])
	}()
	<-done
	return r
}

func TestKeyringDeterministic(t *testing.T) {
	a, b := mustKeyring(t, testSecret), mustKeyring(t, testSecret)
	ca, cb := a.ids()[0].cert, b.ids()[0].cert
	if !bytes.Equal(ca.Certificate[0], cb.Certificate[0]) {
		t.Fatal("the same secret gave two different certificates")
	}
	if a.ServerName() != b.ServerName() {
		t.Fatalf("server names differ: %s %s", a.ServerName(), b.ServerName())
	}
	other := mustKeyring(t, otherSecret).ids()[0].cert
	if bytes.Equal(ca.Certificate[0], other.Certificate[0]) {
		t.Fatal("two secrets gave the same certificate")
	}
	leaf := ca.Leaf
	if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok || !leaf.NotAfter.After(time.Now().AddDate(100, 0, 0)) || leaf.NotBefore.After(time.Now()) {
		t.Fatalf("certificate: key %T, valid %v to %v", leaf.PublicKey, leaf.NotBefore, leaf.NotAfter)
	}
	if err := leaf.CheckSignatureFrom(leaf); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}
	for _, s := range []string{testSecret, otherSecret} {
		if strings.Contains(a.ServerName(), s) {
			t.Fatal("the server name contains the secret")
		}
	}
}

func TestKeyringHandshake(t *testing.T) {
	oldOnly := mustKeyring(t, testSecret)
	rolling := mustKeyring(t, newSecret, testSecret)
	newOnly := mustKeyring(t, newSecret)
	oldCert := oldOnly.ids()[0].cert.Certificate[0]
	newCert := newOnly.ids()[0].cert.Certificate[0]
	for _, tc := range []struct {
		name           string
		client, server *Keyring
		want           []byte // the certificate both use; nil: refused
	}{
		{"old to old", oldOnly, oldOnly, oldCert},
		{"rolling client to old server", rolling, oldOnly, oldCert},
		{"old client to rolling server", oldOnly, rolling, oldCert},
		{"rolling to rolling", rolling, rolling, newCert},
		{"new client to rolling server", newOnly, rolling, newCert},
		{"rolling client to new server", rolling, newOnly, newCert},
		{"new to new", newOnly, newOnly, newCert},
		{"old client to new server", oldOnly, newOnly, nil},
		{"new client to old server", newOnly, oldOnly, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := handshake(t, tc.client.ClientConfig(), tc.server.ServerConfig())
			if tc.want == nil {
				if r.clientErr == nil || r.serverErr == nil {
					t.Fatalf("connected without a common secret: client %v, server %v", r.clientErr, r.serverErr)
				}
				// The server knows none of the client's hints: it aborts
				// on the ClientHello, before sending a certificate.
				if r.serverCert != nil || !IsRemoteAlert(r.clientErr) || !errors.Is(r.serverErr, errUnknownHint) {
					t.Fatalf("client saw %v (certificate sent: %v), server %v; want an alert on the ClientHello", r.clientErr, r.serverCert != nil, r.serverErr)
				}
				return
			}
			if r.clientErr != nil || r.serverErr != nil {
				t.Fatalf("handshake: client %v, server %v", r.clientErr, r.serverErr)
			}
			if !bytes.Equal(r.serverCert, tc.want) || !bytes.Equal(r.clientCert, tc.want) {
				t.Fatal("the two ends did not use the expected secret's certificate")
			}
		})
	}
}

// selfSigned makes a certificate of a key that is not derived from any
// secret.
func selfSigned(t *testing.T, dnsName string) tls.Certificate {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "intruder"}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// TestKeyringRefusesImpostors: peers that know the server name (it is
// visible on the wire) but not the secret.
func TestKeyringRefusesImpostors(t *testing.T) {
	k := mustKeyring(t, testSecret)
	own := selfSigned(t, "x")
	t.Run("client with its own certificate", func(t *testing.T) {
		r := handshake(t, &tls.Config{ServerName: k.ServerName(), InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &own, nil }}, k.ServerConfig())
		if !errors.Is(r.serverErr, ErrNotPinned) || r.clientErr == nil {
			t.Fatalf("server %v, client %v; want the server to refuse the certificate", r.serverErr, r.clientErr)
		}
	})
	t.Run("client without a certificate", func(t *testing.T) {
		r := handshake(t, &tls.Config{ServerName: k.ServerName(), InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, k.ServerConfig())
		if r.serverErr == nil || r.clientErr == nil {
			t.Fatalf("server %v, client %v; want a refusal", r.serverErr, r.clientErr)
		}
	})
	t.Run("server with its own certificate", func(t *testing.T) {
		r := handshake(t, k.ClientConfig(), &tls.Config{Certificates: []tls.Certificate{own}, ClientAuth: tls.RequireAnyClientCert})
		if !errors.Is(r.clientErr, ErrNotPinned) {
			t.Fatalf("client %v; want it to refuse the server's certificate", r.clientErr)
		}
		if r.clientCert != nil {
			t.Fatal("the client sent its certificate to an impostor")
		}
	})
	t.Run("TLS 1.2", func(t *testing.T) {
		cfg := k.ClientConfig()
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if r := handshake(t, cfg, k.ServerConfig()); r.serverErr == nil {
			t.Fatal("the server accepted TLS 1.2")
		}
	})
}

func TestKeyringAuthenticated(t *testing.T) {
	k := mustKeyring(t, newSecret, testSecret)
	ours := mustKeyring(t, testSecret).ids()[0].cert.Leaf
	theirs, err := x509.ParseCertificate(selfSigned(t, "x").Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	tlsInfo := func(c *x509.Certificate) credentials.AuthInfo {
		var st tls.ConnectionState
		if c != nil {
			st.PeerCertificates = []*x509.Certificate{c}
		}
		return credentials.TLSInfo{State: st}
	}
	_, insecureInfo, _ := insecure.NewCredentials().ServerHandshake(nopConn{})
	for _, tc := range []struct {
		name string
		ai   credentials.AuthInfo
		want bool
	}{
		{"our certificate", tlsInfo(ours), true},
		{"another certificate", tlsInfo(theirs), false},
		{"TLS without a client certificate", tlsInfo(nil), false},
		{"plaintext", insecureInfo, false},
		{"nothing", nil, false},
	} {
		if got := k.Authenticated(tc.ai); got != tc.want {
			t.Errorf("%s: Authenticated = %v, want %v", tc.name, got, tc.want)
		}
	}
}

type nopConn struct{ net.Conn }

func TestKeyringErrorsAndFormatting(t *testing.T) {
	if _, err := NewKeyring("short-secret"); err == nil || !strings.Contains(err.Error(), "need at least 16") || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := NewKeyring(testSecret, "short-old"); err == nil || !strings.Contains(err.Error(), "secret #2") {
		t.Fatalf("short older secret: %v", err)
	}
	k := mustKeyring(t, testSecret, testSecret, otherSecret)
	if k.n != 2 {
		t.Fatalf("%d identities, want 2 (duplicates ignored)", k.n)
	}
	type hidden struct{ k Keyring }
	for _, v := range []any{k, *k, hidden{*k}, []any{k}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
			out := fmt.Sprintf(verb, v)
			for _, id := range k.ids() {
				priv := id.cert.PrivateKey.(ed25519.PrivateKey)
				for _, leak := range []string{string(priv), fmt.Sprintf("%x", []byte(priv[:8])), strings.Trim(fmt.Sprint([]byte(priv[:4])), "[]"), testSecret, otherSecret} {
					if strings.Contains(out, leak) {
						t.Fatalf("%s of %T reveals key material: %s", verb, v, out)
					}
				}
			}
		}
	}
}
