package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestParseHeader(t *testing.T) {
	nonce := base64.RawURLEncoding.EncodeToString(make([]byte, nonceLen))
	mac := base64.RawURLEncoding.EncodeToString(make([]byte, sha256.Size))
	good := "flypg-hmac v1 ts=1700000000,nonce=" + nonce + ",mac=" + mac

	// A nonce whose last character carries nonzero unused bits decodes to
	// the same bytes as nonce; only the canonical form is accepted.
	nonCanonical := nonce[:len(nonce)-1] + "B"

	for _, tc := range []struct {
		name, in, wantErr string
		version           bool // want errUnsupportedVersion
	}{
		{name: "good", in: good},
		{name: "ts zero", in: strings.Replace(good, "ts=1700000000", "ts=0", 1)},
		{name: "empty", in: "", wantErr: "scheme"},
		{name: "other scheme", in: "Bearer abc", wantErr: "scheme"},
		{name: "scheme case", in: strings.Replace(good, "flypg-hmac", "Flypg-HMAC", 1), wantErr: "scheme"},
		{name: "v2", in: strings.Replace(good, " v1 ", " v2 ", 1), version: true},
		{name: "no version", in: "flypg-hmac ", version: true},
		{name: "no params", in: "flypg-hmac v1", wantErr: "no parameters"},
		{name: "two params", in: "flypg-hmac v1 ts=1,nonce=" + nonce, wantErr: "want 3"},
		{name: "four params", in: good + ",x=1", wantErr: "want 3"},
		{name: "order", in: "flypg-hmac v1 nonce=" + nonce + ",ts=1,mac=" + mac, wantErr: "want ts="},
		{name: "space in params", in: strings.Replace(good, ",nonce", ", nonce", 1), wantErr: "want nonce="},
		{name: "ts empty", in: strings.Replace(good, "ts=1700000000", "ts=", 1), wantErr: "empty ts"},
		{name: "ts sign", in: strings.Replace(good, "ts=1700000000", "ts=+1700000000", 1), wantErr: "not a decimal"},
		{name: "ts negative", in: strings.Replace(good, "ts=1700000000", "ts=-1", 1), wantErr: "not a decimal"},
		{name: "ts leading zero", in: strings.Replace(good, "ts=1700000000", "ts=01700000000", 1), wantErr: "leading zeros"},
		{name: "ts overflow", in: strings.Replace(good, "ts=1700000000", "ts=99999999999999999999", 1), wantErr: "out of range"},
		{name: "nonce short", in: strings.Replace(good, nonce, nonce[1:], 1), wantErr: "nonce is 21 characters"},
		{name: "nonce padded", in: strings.Replace(good, nonce, nonce[2:]+"==", 1), wantErr: "nonce is not unpadded"},
		{name: "nonce std alphabet", in: strings.Replace(good, nonce, "+"+nonce[1:], 1), wantErr: "nonce is not unpadded"},
		{name: "nonce non-canonical", in: strings.Replace(good, nonce, nonCanonical, 1), wantErr: "nonce is not canonical"},
		{name: "mac short", in: good[:len(good)-1], wantErr: "mac is 42 characters"},
		{name: "too long", in: good + strings.Repeat("A", maxHeaderLen), wantErr: "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseHeader(tc.in)
			switch {
			case tc.version:
				if !errors.Is(err, errUnsupportedVersion) {
					t.Fatalf("err = %v, want unsupported version", err)
				}
			case tc.wantErr == "":
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if got := formatHeader(h.tsRaw, h.nonceRaw, h.mac[:]); got != tc.in {
					t.Fatalf("round trip: %q != %q", got, tc.in)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			}
		})
	}
}

func TestErrorsQuoteShort(t *testing.T) {
	_, err := parseHeader("flypg-hmac " + strings.Repeat("x", 200) + " ts=1")
	if err == nil || len(err.Error()) > 100 {
		t.Fatalf("error should quote only a short fragment: %v", err)
	}
}

// FuzzParse: the parser never panics, and whatever it accepts re-encodes to
// exactly the input (one spelling per header).
func FuzzParse(f *testing.F) {
	f.Add(captureHeader(f, testSecret, methodCheck))
	f.Add("flypg-hmac v1 ts=0,nonce=AAAAAAAAAAAAAAAAAAAAAA,mac=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("flypg-hmac v2 ts=1")
	f.Add("flypg-hmac v1 ts=1,,")
	f.Add("flypg-hmac v1 ts=01,nonce=,mac=")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHeader(s)
		if err != nil {
			return
		}
		if got := formatHeader(h.tsRaw, h.nonceRaw, h.mac[:]); got != s {
			t.Fatalf("accepted %q but re-encodes as %q", s, got)
		}
	})
}
