package flypg

import (
	"fmt"
	"log/slog"

	"github.com/flypg/flypg/internal/secret"
)

type configView Config

// Format prints the configuration with Secret, OldSecrets and the
// password of PrimaryDSN masked, under every verb. (Executor holds limits
// only: nothing in it is secret.)
func (c Config) Format(f fmt.State, verb rune) {
	v := configView(c)
	v.Secret = secret.Redact(v.Secret)
	v.OldSecrets = secret.RedactAll(v.OldSecrets)
	v.PrimaryDSN = secret.RedactDSN(v.PrimaryDSN)
	secret.Format(f, verb, v, "flypg.Config")
}

// String is the configuration as %v prints it, secrets masked.
func (c Config) String() string { return fmt.Sprint(c) }

// GoString is the configuration as %#v prints it, secrets masked.
func (c Config) GoString() string { return fmt.Sprintf("%#v", c) }

// LogValue logs the configuration with its secrets masked.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Format prints the plugin as its regions, whatever the verb: the
// configuration it holds is printed only through Config.
func (p *Plugin) Format(f fmt.State, _ rune) {
	p.mu.Lock()
	region, primary := p.cfg.Region, p.cfg.PrimaryRegion
	p.mu.Unlock()
	fmt.Fprintf(f, "flypg.Plugin(region %q, primary region %q)", region, primary)
}
