package flypg

import (
	"strings"
	"testing"

	"github.com/flypg/flypg/internal/secret"
)

// TestSecretsNeverFormatted prints and logs the configuration and the
// plugin every way a program might, and checks that the secrets and the
// primary's password never show.
func TestSecretsNeverFormatted(t *testing.T) {
	const (
		current  = "current-secret-0123456789abcdef"
		old      = "older-secret-0123456789abcdef"
		password = "pg-password-hunter2"
	)
	cfg := Config{
		Region: "syd", PrimaryRegion: "iad", PrimaryAddr: "127.0.0.1:1",
		Secret: current, OldSecrets: []string{old},
		PrimaryDSN: "host=db user=app password=" + password,
	}
	p := New(cfg)
	// As Initialize keeps the configuration once resolved.
	resolved, err := p.config().resolve()
	if err != nil {
		t.Fatal(err)
	}
	p.setConfig(resolved)
	type holder struct{ p *Plugin }
	for name, v := range map[string]any{
		"Config": cfg, "*Config": &cfg, "Plugin.Config()": p.Config(), "*Plugin": p, "holder": holder{p},
	} {
		for _, leak := range secret.Leaks(v, current, old, password) {
			t.Errorf("%s: %s", name, leak)
		}
	}
	if s := cfg.String(); !strings.Contains(s, "syd") || !strings.Contains(s, secret.Mask) {
		t.Errorf("Config.String() = %s", s)
	}
	// The plugin still has them.
	if got := p.Config(); got.Secret != current || got.OldSecrets[0] != old || !strings.Contains(got.PrimaryDSN, password) {
		t.Error("Config() lost the secrets")
	}
}
