package flypg

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestResolve(t *testing.T) {
	t.Setenv("FLY_REGION", "")
	t.Setenv("MY_REGION", "")
	t.Setenv("PRIMARY_REGION", "")
	t.Setenv("FLY_APP_NAME", "")
	secret := "0123456789abcdef"
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "zero value is local pass-through", cfg: Config{}, check: func(t *testing.T, c Config) {
			if c.Region != "local" || c.PrimaryRegion != "local" || c.Port != DefaultPort || c.AwaitTimeout != DefaultAwaitTimeout || c.RPCTimeout != DefaultRPCTimeout {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{name: "primary region needs no secret", cfg: Config{Region: "iad", PrimaryRegion: "iad"}},
		{name: "default executor address from the app name", cfg: Config{Region: "syd", PrimaryRegion: "iad", AppName: "shop", Secret: secret}, check: func(t *testing.T, c Config) {
			if c.PrimaryAddr != "dns:///iad.shop.internal:5480" {
				t.Fatalf("PrimaryAddr = %q", c.PrimaryAddr)
			}
		}},
		{name: "explicit address and port", cfg: Config{Region: "syd", PrimaryRegion: "iad", AppName: "shop", Port: 7000, PrimaryAddr: "10.0.0.1:7000", Secret: secret}, check: func(t *testing.T, c Config) {
			if c.PrimaryAddr != "10.0.0.1:7000" {
				t.Fatalf("PrimaryAddr = %q", c.PrimaryAddr)
			}
		}},
		{name: "replica region without a secret", cfg: Config{Region: "syd", PrimaryRegion: "iad", AppName: "shop"}, wantErr: "needs a Secret"},
		{name: "replica region, insecure allowed", cfg: Config{Region: "syd", PrimaryRegion: "iad", AppName: "shop", Insecure: true}},
		{name: "replica region without an address", cfg: Config{Region: "syd", PrimaryRegion: "iad", Secret: secret}, wantErr: "PrimaryAddr"},
		{name: "short secret", cfg: Config{Secret: "short"}, wantErr: "at least 16"},
		{name: "short old secret", cfg: Config{Secret: secret, OldSecrets: []string{"short"}}, wantErr: "OldSecrets[0] is 5 bytes"},
		{name: "old secrets without a secret", cfg: Config{OldSecrets: []string{secret}}, wantErr: "without a Secret"},
		{name: "bad region", cfg: Config{Region: "new york"}, wantErr: "not a region name"},
		{name: "bad primary region", cfg: Config{PrimaryRegion: "a/b"}, wantErr: "not a region name"},
		{name: "bad port", cfg: Config{Port: 70000}, wantErr: "Port"},
		{name: "negative timeout", cfg: Config{AwaitTimeout: -time.Second}, wantErr: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.cfg.resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("FLY_REGION", "syd")
	t.Setenv("PRIMARY_REGION", "iad")
	t.Setenv("FLY_APP_NAME", "shop")
	t.Setenv("FLYPG_SECRET", "0123456789abcdef-env")
	t.Setenv("FLYPG_OLD_SECRETS", "0123456789abcdef-old1, 0123456789abcdef-old2,")
	t.Setenv("FLYPG_PORT", "6000")
	t.Setenv("FLYPG_AWAIT_TIMEOUT", "2s")
	t.Setenv("FLYPG_RPC_TIMEOUT", "750ms")
	t.Setenv("FLYPG_BOOKMARK_WAIT", "30ms")
	t.Setenv("FLYPG_DURABLE_DEDUP", "true")
	c, err := ConfigFromEnv().resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "syd" || c.PrimaryRegion != "iad" || c.Port != 6000 || c.AwaitTimeout != 2*time.Second || c.RPCTimeout != 750*time.Millisecond || c.BookmarkWait != 30*time.Millisecond || c.PrimaryAddr != "dns:///iad.shop.internal:6000" || !c.Executor.DurableDedup {
		t.Fatalf("config from env: %+v", c)
	}
	if len(c.OldSecrets) != 2 || c.OldSecrets[0] != "0123456789abcdef-old1" || c.OldSecrets[1] != "0123456789abcdef-old2" {
		t.Fatalf("OldSecrets from FLYPG_OLD_SECRETS: %q", c.OldSecrets)
	}
	if strings.Contains(strings.ToLower(strings.Join([]string{c.PrimaryAddr, c.AppName}, " ")), "env") {
		t.Fatal("secret leaked into another field")
	}

	t.Setenv("FLYPG_PORT", "many")
	t.Setenv("FLYPG_AWAIT_TIMEOUT", "soon")
	t.Setenv("FLYPG_BOOKMARK_WAIT", "later")
	_, err = ConfigFromEnv().resolve()
	if err == nil || !strings.Contains(err.Error(), "FLYPG_PORT") || !strings.Contains(err.Error(), "FLYPG_AWAIT_TIMEOUT") || !strings.Contains(err.Error(), "FLYPG_BOOKMARK_WAIT") {
		t.Fatalf("malformed env: %v", err)
	}
}

func TestTracersImplementSomething(t *testing.T) {
	if _, err := newTracers(Config{Tracers: []any{"not a tracer"}}); err == nil || !strings.Contains(err.Error(), "Tracers[0] (string)") {
		t.Fatalf("a string as a tracer: %v", err)
	}
	tr, err := newTracers(Config{OnWrite: func(context.Context, WriteEvent) {}})
	if err != nil || len(tr.writes) != 1 || tr.startStatement() != nil || tr.startWait() != nil || tr.sessionUnit() != nil {
		t.Fatalf("OnWrite alone: %+v, %v", tr, err)
	}
}
