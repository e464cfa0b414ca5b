package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	// AuthHeader is the gRPC metadata key carrying the signature.
	AuthHeader = "authorization"

	scheme   = "flypg-hmac"
	version1 = "v1"

	nonceLen = 16
	// maxHeaderLen is far above a real header (about 110 bytes) and stops
	// the parser from touching arbitrarily large attacker input.
	maxHeaderLen = 512
)

// header is a parsed authorization header. tsRaw and nonceRaw keep the exact
// strings that were signed.
type header struct {
	ts       int64
	tsRaw    string
	nonce    [nonceLen]byte
	nonceRaw string
	mac      [sha256.Size]byte
}

// errUnsupportedVersion is returned (wrapped) when the scheme is ours but
// the version is not; Verify reports it separately from malformed headers
// because it points at a client/server version skew rather than an attack.
var errUnsupportedVersion = errors.New("unsupported version")

// formatHeader renders a v1 header.
func formatHeader(ts, nonce string, mac []byte) string {
	return scheme + " " + version1 + " ts=" + ts + ",nonce=" + nonce + ",mac=" + base64.RawURLEncoding.EncodeToString(mac)
}

// parseHeader parses "flypg-hmac v1 ts=…,nonce=…,mac=…". Errors describe
// what is wrong without echoing more than a short quoted fragment of the
// input.
func parseHeader(s string) (header, error) {
	var h header
	if len(s) > maxHeaderLen {
		return h, fmt.Errorf("header is %d bytes, limit %d", len(s), maxHeaderLen)
	}
	rest, ok := strings.CutPrefix(s, scheme+" ")
	if !ok {
		return h, fmt.Errorf("scheme is not %q", scheme)
	}
	ver, params, ok := strings.Cut(rest, " ")
	if ver != version1 {
		return h, fmt.Errorf("%w %s (this server speaks %s)", errUnsupportedVersion, quoteShort(ver), version1)
	}
	if !ok {
		return h, errors.New("no parameters after version")
	}

	fields := strings.Split(params, ",")
	if len(fields) != 3 {
		return h, fmt.Errorf("want 3 comma-separated parameters ts,nonce,mac; got %d", len(fields))
	}
	var vals [3]string
	for i, key := range [3]string{"ts", "nonce", "mac"} {
		v, ok := strings.CutPrefix(fields[i], key+"=")
		if !ok {
			return h, fmt.Errorf("parameter %d: want %s=…", i+1, key)
		}
		vals[i] = v
	}

	ts, err := parseTimestamp(vals[0])
	if err != nil {
		return h, err
	}
	h.ts, h.tsRaw = ts, vals[0]

	if err := decodeFixed(h.nonce[:], vals[1], "nonce"); err != nil {
		return h, err
	}
	h.nonceRaw = vals[1]
	if err := decodeFixed(h.mac[:], vals[2], "mac"); err != nil {
		return h, err
	}
	return h, nil
}

// parseTimestamp accepts only canonical non-negative decimal: no sign, no
// leading zeros, no spaces.
func parseTimestamp(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty ts")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("ts %s is not a decimal number", quoteShort(s))
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("ts %s has leading zeros", quoteShort(s))
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ts %s out of range", quoteShort(s))
	}
	return ts, nil
}

// decodeFixed decodes unpadded base64url that must yield exactly len(dst)
// bytes (at most 32). It insists on the canonical encoding (unused trailing
// bits zero) so that each value has exactly one accepted spelling.
func decodeFixed(dst []byte, s, name string) error {
	enc := base64.RawURLEncoding
	want := enc.EncodedLen(len(dst))
	if len(s) != want {
		return fmt.Errorf("%s is %d characters, want %d (unpadded base64url of %d bytes)", name, len(s), want, len(dst))
	}
	n, err := enc.Decode(dst, []byte(s))
	if err != nil || n != len(dst) {
		return fmt.Errorf("%s is not unpadded base64url", name)
	}
	var buf [64]byte // re-encode on the stack to check canonical form
	enc.Encode(buf[:want], dst)
	if string(buf[:want]) != s {
		return fmt.Errorf("%s is not canonical base64url (nonzero trailing bits)", name)
	}
	return nil
}

// quoteShort quotes s for an error message, truncated so that a hostile
// client cannot push much text into server logs.
func quoteShort(s string) string {
	const limit = 16
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "…"
	}
	return strconv.Quote(s)
}
