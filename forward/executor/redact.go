package executor

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

type configView Config

// Format prints the configuration with Secret, OldSecrets and the DSN's
// password masked, under every verb.
func (c Config) Format(f fmt.State, verb rune) {
	v := configView(c)
	v.DSN = secret.RedactDSN(v.DSN)
	v.Secret = secret.Redact(v.Secret)
	v.OldSecrets = secret.RedactAll(v.OldSecrets)
	secret.Format(f, verb, v, "executor.Config")
}

// String is the configuration as %v prints it, secrets masked.
func (c Config) String() string { return fmt.Sprint(c) }

// GoString is the configuration as %#v prints it, secrets masked.
func (c Config) GoString() string { return fmt.Sprintf("%#v", c) }

// LogValue logs the configuration with its secrets masked.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Format prints the executor as its instance ID, whatever the verb.
func (x *Executor) Format(f fmt.State, _ rune) { fmt.Fprintf(f, "executor.Executor(%s)", x.instance) }
