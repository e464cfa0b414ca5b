package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// A Keyring turns shared secrets into TLS identities, so that holding the
// secret is all a node needs for mutual TLS with every other node: no
// certificate authority, no files, nothing to renew.
//
// From each secret it derives (HKDF-SHA256) an Ed25519 key and a hint, and
// from the key a self-signed certificate that is byte for byte the same on
// every node (fixed serial, names and validity; Ed25519 signatures are
// deterministic). Both sides pin that certificate: a server accepts a
// client only if it presents the certificate of one of its secrets (and
// proves the key in the handshake), a client accepts a server only if it
// does the same. TLS 1.3 then encrypts and authenticates every byte with
// fresh keys per connection, so nothing recorded from one connection
// means anything on another, on this node or any other, before or after a
// restart.
//
// The first secret is the current one; the others are accepted during a
// rotation. A client names the hints of all its secrets in the server name
// (SNI) and the server answers with the certificate of the first one it
// knows; a server that knows none of them aborts the handshake before
// sending any certificate, so a caller without a secret learns nothing
// derived from it. The server lists the certificates it accepts in its
// certificate request and the client presents the first of its own that
// is listed. So a node with the new secret and the old one as additional
// talks to nodes that know only the old one, in both directions.
type Keyring struct {
	// ids returns the identities, current first. The private keys live
	// only inside this closure: fmt prints a func as an address, so no
	// formatting of a value holding a Keyring can reveal them.
	ids func() []identity
	n   int
}

type identity struct {
	hint string          // DNS label naming the secret in SNI
	cert tls.Certificate // self-signed, with the private key and Leaf
}

const (
	keyringSalt = "flypg forward transport v2"
	// hintDomain ends every server name a client sends. .invalid is
	// reserved (RFC 2606): the name can never resolve or collide.
	hintDomain = "flypg.invalid"
)

// NewKeyring derives the identities of secret (the current one) and of
// older secrets still accepted during a rotation. Each must be at least
// MinSecretLen bytes; duplicates are ignored.
func NewKeyring(secret string, older ...string) (*Keyring, error) {
	var ids []identity
	seen := map[string]bool{}
	for i, s := range append([]string{secret}, older...) {
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("flypg auth: secret #%d is %d bytes, need at least %d", i+1, len(s), MinSecretLen)
		}
		if seen[s] {
			continue
		}
		seen[s] = true
		id, err := deriveIdentity(s)
		if err != nil {
			return nil, fmt.Errorf("flypg auth: secret #%d: %w", i+1, err)
		}
		ids = append(ids, id)
	}
	return &Keyring{ids: func() []identity { return ids }, n: len(ids)}, nil
}

func deriveIdentity(secret string) (identity, error) {
	seed, err := hkdf.Key(sha256.New, []byte(secret), []byte(keyringSalt), "ed25519 identity", ed25519.SeedSize)
	if err != nil {
		return identity{}, err
	}
	hintBytes, err := hkdf.Key(sha256.New, []byte(secret), []byte(keyringSalt), "server name hint", 8)
	if err != nil {
		return identity{}, err
	}
	hint := "k" + hex.EncodeToString(hintBytes)
	priv := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flypg " + hint},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{hint + "." + hintDomain},
	}
	// No randomness: Ed25519 signs deterministically and the serial is
	// fixed, so every node builds the same certificate. noRandom makes
	// any use of randomness an error rather than a silent difference.
	der, err := x509.CreateCertificate(noRandom{}, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return identity{}, fmt.Errorf("certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return identity{}, fmt.Errorf("certificate: %w", err)
	}
	return identity{hint: hint, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}}, nil
}

type noRandom struct{}

func (noRandom) Read([]byte) (int, error) {
	return 0, errors.New("no randomness in a derived certificate")
}

// ServerName is the server name (SNI) a client sends: the hints of its
// secrets, current first.
func (k *Keyring) ServerName() string {
	var b strings.Builder
	for _, id := range k.ids() {
		b.WriteString(id.hint)
		b.WriteByte('.')
	}
	b.WriteString(hintDomain)
	return b.String()
}

// ServerConfig returns the TLS configuration of a server: TLS 1.3 only,
// the certificate of the first secret the client's server name hints at
// (none: the handshake is aborted), a client certificate required and
// pinned, no session resumption.
func (k *Keyring) ServerConfig() *tls.Config {
	pool := x509.NewCertPool()
	for _, id := range k.ids() {
		pool.AddCert(id.cert.Leaf)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Called with the ClientHello, before any key exchange: a client
		// that names no secret we know costs little and gets nothing.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if k.certFor(hello.ServerName) == nil {
				return nil, errUnknownHint
			}
			return nil, nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return k.certFor(hello.ServerName), nil
		},
		ClientAuth: tls.RequireAnyClientCert,
		// Only advertised (as the certificate authorities the server
		// accepts), so that a client picks a certificate this server
		// knows; the check itself is the pin below.
		ClientCAs:              pool,
		VerifyPeerCertificate:  k.verifyPeer,
		SessionTicketsDisabled: true,
	}
}

// ClientConfig returns the TLS configuration of a client: TLS 1.3 only,
// the server's certificate pinned, and the client certificate the server
// accepts.
func (k *Keyring) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: k.ServerName(),
		// The standard chain verification is replaced by the pin: the
		// server must present the certificate of one of our secrets.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: k.verifyPeer,
		GetClientCertificate: func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			ids := k.ids()
			for i := range ids {
				if req.SupportsCertificate(&ids[i].cert) == nil {
					return &ids[i].cert, nil
				}
			}
			return &ids[0].cert, nil // the server will refuse it
		},
	}
}

// certFor returns the certificate of the first secret whose hint is a
// label of serverName.
func (k *Keyring) certFor(serverName string) *tls.Certificate {
	ids := k.ids()
	for label := range strings.SplitSeq(strings.TrimSuffix(serverName, "."+hintDomain), ".") {
		for i := range ids {
			if ids[i].hint == label {
				return &ids[i].cert
			}
		}
	}
	return nil
}

// errUnknownHint aborts a handshake whose server name hints at no secret
// of ours.
var errUnknownHint = errors.New("flypg auth: the client names no secret this server knows")

// ErrNotPinned is the handshake error when the peer's certificate is not
// derived from any of our secrets.
var ErrNotPinned = errors.New("flypg auth: the peer's certificate is not derived from the shared secret")

func (k *Keyring) verifyPeer(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) > 0 && k.pinned(raw[0]) {
		return nil
	}
	return ErrNotPinned
}

func (k *Keyring) pinned(der []byte) bool {
	for _, id := range k.ids() {
		if bytes.Equal(der, id.cert.Certificate[0]) {
			return true
		}
	}
	return false
}

// Authenticated reports whether the connection described by ai is TLS on
// which the peer proved one of the keyring's keys.
func (k *Keyring) Authenticated(ai credentials.AuthInfo) bool {
	info, ok := ai.(credentials.TLSInfo)
	return ok && len(info.State.PeerCertificates) > 0 && k.pinned(info.State.PeerCertificates[0].Raw)
}

// IsRemoteAlert reports whether err is a TLS alert sent by the peer (how
// crypto/tls reports one: a *net.OpError with Op "remote error"). From a
// flypg executor, an alert during or right after the handshake means it
// refused the client's secret.
func IsRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// Format prints a description without any key material under every verb.
func (k Keyring) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "flypg TLS keyring (%d secret(s))", k.n)
}
