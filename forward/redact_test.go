package forward_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	isecret "github.com/flypg/flypg/internal/secret"
)

// TestSecretsNeverFormatted prints and logs every value of this package
// that holds a secret or a password and checks that none shows.
func TestSecretsNeverFormatted(t *testing.T) {
	const (
		current  = "current-secret-0123456789abcdef"
		old      = "older-secret-0123456789abcdef"
		password = "pg-password-hunter2"
	)
	xc := executor.Config{
		DSN:    "postgres://app:" + password + "@127.0.0.1:1/app",
		Secret: current, OldSecrets: []string{old},
	}
	x, err := executor.New(context.Background(), xc)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	cc := forward.ClientConfig{Target: "127.0.0.1:1", Secret: current, OldSecrets: []string{old}}
	c, err := forward.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type holder struct {
		x *executor.Executor
		c *forward.Client
	}
	for name, v := range map[string]any{
		"ExecutorConfig": xc, "*ExecutorConfig": &xc, "ClientConfig": cc, "*ClientConfig": &cc,
		"*Executor": x, "*Client": c, "holder": holder{x, c}, "[]any": []any{xc, cc},
	} {
		for _, leak := range isecret.Leaks(v, current, old, password) {
			t.Errorf("%s: %s", name, leak)
		}
	}
	// What is not secret still shows.
	if s := xc.String(); !strings.Contains(s, "127.0.0.1:1") || !strings.Contains(s, isecret.Mask) {
		t.Errorf("ExecutorConfig.String() = %s", s)
	}
}
