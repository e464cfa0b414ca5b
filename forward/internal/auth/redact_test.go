package auth

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// TestSecretNeverFormatted formats every value that holds a secret with all
// the usual verbs and checks that no rendering of the secret appears.
func TestSecretNeverFormatted(t *testing.T) {
	v, err := NewVerifier(testSecret, WithAdditionalSecrets(otherSecret))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := NewCredentials(testSecret, true)
	if err != nil {
		t.Fatal(err)
	}
	// Fields printed directly, bypassing the Format methods, as reflection
	// would when these values sit in an unexported field of another struct.
	type hidden struct {
		v Verifier
		c clientCreds
	}
	values := map[string]any{
		"hidden fields":  hidden{*v, *creds.(*clientCreds)},
		"*Verifier":      v,
		"Verifier":       *v,
		"credentials":    creds,
		"*clientCreds":   creds.(*clientCreds),
		"clientCreds":    *creds.(*clientCreds),
		"signers":        v.macs,
		"[]any":          []any{v, creds},
		"struct wrapper": struct{ V *Verifier }{v},
	}
	var forbidden []string
	for _, s := range []string{testSecret, otherSecret} {
		forbidden = append(forbidden,
			s,
			hex.EncodeToString([]byte(s)),
			base64.StdEncoding.EncodeToString([]byte(s)),
			strings.Trim(fmt.Sprint([]byte(s)), "[]"), // decimal byte list as %v prints it
			fmt.Sprintf("%#v", []byte(s))[len("[]byte{"):20],
		)
	}
	for name, val := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			out := fmt.Sprintf(verb, val)
			for _, f := range forbidden {
				if strings.Contains(out, f) {
					t.Errorf("%s formatted with %s reveals a secret: %s", name, verb, out)
				}
			}
		}
	}
}
