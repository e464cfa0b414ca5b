package forward

import (
	"fmt"
	"log/slog"

	"github.com/flypg/flypg/internal/secret"
)

// Configurations hold secrets and connection strings with passwords; every
// way of printing them (fmt with any verb, String, GoString, slog) shows
// those masked. Values that hold a configuration in an unexported field
// print only a short description, since fmt would print such a field
// without asking its Format method.

type clientConfigView ClientConfig

// Format prints the configuration with Secret and OldSecrets masked, under
// every verb.
func (c ClientConfig) Format(f fmt.State, verb rune) {
	v := clientConfigView(c)
	v.Secret = secret.Redact(v.Secret)
	v.OldSecrets = secret.RedactAll(v.OldSecrets)
	secret.Format(f, verb, v, "forward.ClientConfig")
}

// String is the configuration as %v prints it, secrets masked.
func (c ClientConfig) String() string { return fmt.Sprint(c) }

// GoString is the configuration as %#v prints it, secrets masked.
func (c ClientConfig) GoString() string { return fmt.Sprintf("%#v", c) }

// LogValue logs the configuration with its secrets masked.
func (c ClientConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Format prints the client as its target, whatever the verb.
func (c *Client) Format(f fmt.State, _ rune) { fmt.Fprintf(f, "forward.Client(%s)", c.cfg.Target) }
