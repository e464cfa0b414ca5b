package fly_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flypg/flypg/fly"
)

var (
	urlTestReplica = fly.URLConfig{Region: "fra", PrimaryRegion: "iad", Production: true}
	urlTestPrimary = fly.URLConfig{Region: "iad", PrimaryRegion: "iad", Production: true}
)

var urlTestCases = []struct {
	name string
	in   string
	cfg  fly.URLConfig
	want string
}{
	// Host rules, in a replica region (port becomes 5433).
	{"prefix plain host", "postgres://u:p@my-db.internal:5432/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app"},
	{"top2 becomes top1", "postgres://u:p@top2.nearest.of.my-db.internal:5432/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app"},
	{"top1 unchanged", "postgres://u:p@top1.nearest.of.my-db.internal:5432/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app"},
	{"flycast unchanged", "postgres://u:p@my-db.flycast:5432/app", urlTestReplica,
		"postgres://u:p@my-db.flycast:5433/app"},
	{"flycast wins over top2", "postgres://u:p@top2.nearest.of.my-db.flycast:5432/app", urlTestReplica,
		"postgres://u:p@top2.nearest.of.my-db.flycast:5433/app"},
	{"top1 wins over top2", "postgres://u:p@top1.nearest.of.top2.nearest.of.x.internal/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.top2.nearest.of.x.internal:5433/app"},
	{"markers ignore case", "postgres://u:p@TOP2.Nearest.Of.My-DB.internal:5432/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.My-DB.internal:5433/app"},
	{"no port gets replica port", "postgres://u:p@my-db.internal/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app"},
	{"empty port gets replica port", "postgres://u:p@my-db.internal:/app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app"},
	{"no path", "postgres://u:p@my-db.internal:5432", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433"},
	{"no path no port", "postgres://u:p@my-db.internal", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433"},
	{"no user info", "postgres://my-db.internal:5432/app", urlTestReplica,
		"postgres://top1.nearest.of.my-db.internal:5433/app"},
	{"user without password", "postgres://u@my-db.internal/app", urlTestReplica,
		"postgres://u@top1.nearest.of.my-db.internal:5433/app"},
	{"postgresql scheme", "postgresql://u:p@my-db.internal:5432/app", urlTestReplica,
		"postgresql://u:p@top1.nearest.of.my-db.internal:5433/app"},
	{"query kept", "postgres://u:p@my-db.internal:5432/app?sslmode=disable&application_name=web%20app&connect_timeout=5", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app?sslmode=disable&application_name=web%20app&connect_timeout=5"},
	{"query without path", "postgres://u:p@my-db.internal?sslmode=disable", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433?sslmode=disable"},
	{"trailing ampersand", "postgres://u:p@my-db.internal/app?sslmode=disable&", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/app?sslmode=disable&"},
	{"encoded database name", "postgres://u:p@my-db.internal/my%20app", urlTestReplica,
		"postgres://u:p@top1.nearest.of.my-db.internal:5433/my%20app"},

	// Passwords: kept byte for byte, percent-encoding included.
	{"percent-encoded password", "postgres://u:p%40ss%2Fw%3Ard%21%25@my-db.internal:5432/app", urlTestReplica,
		"postgres://u:p%40ss%2Fw%3Ard%21%25@top1.nearest.of.my-db.internal:5433/app"},
	{"lower-case percent-encoding", "postgres://u:p%2fss@my-db.internal/app", urlTestReplica,
		"postgres://u:p%2fss@top1.nearest.of.my-db.internal:5433/app"},
	{"raw special characters", "postgres://u:p!$&'()*+,;=~#?ss@my-db.internal/app", urlTestReplica,
		"postgres://u:p!$&'()*+,;=~#?ss@top1.nearest.of.my-db.internal:5433/app"},
	{"colon in password", "postgres://u:a:b:c@my-db.internal/app", urlTestReplica,
		"postgres://u:a:b:c@top1.nearest.of.my-db.internal:5433/app"},
	{"encoded user", "postgres://us%40er:p@my-db.internal/app", urlTestReplica,
		"postgres://us%40er:p@top1.nearest.of.my-db.internal:5433/app"},

	// IP addresses: host kept, port rule applied.
	{"ipv4", "postgres://u:p@10.0.0.1:5432/app", urlTestReplica,
		"postgres://u:p@10.0.0.1:5433/app"},
	{"ipv4 no port", "postgres://u:p@10.0.0.1/app", urlTestReplica,
		"postgres://u:p@10.0.0.1:5433/app"},
	{"ipv6", "postgres://u:p@[fdaa:0:1:a7b::2]:5432/app", urlTestReplica,
		"postgres://u:p@[fdaa:0:1:a7b::2]:5433/app"},
	{"ipv6 no port", "postgres://u:p@[::1]/app", urlTestReplica,
		"postgres://u:p@[::1]:5433/app"},
	{"ipv6 no path", "postgres://u:p@[::1]", urlTestReplica,
		"postgres://u:p@[::1]:5433"},
	{"ipv6 with zone", "postgres://u:p@[fe80::1%25eth0]:5432/app", urlTestReplica,
		"postgres://u:p@[fe80::1%25eth0]:5433/app"},
	{"ipv6 primary", "postgres://u:p@[::1]:6432/app", urlTestPrimary,
		"postgres://u:p@[::1]:6432/app"},

	// Primary region: host rules apply, the port does not change.
	{"primary prefix keeps port", "postgres://u:p@my-db.internal:5432/app?sslmode=disable", urlTestPrimary,
		"postgres://u:p@top1.nearest.of.my-db.internal:5432/app?sslmode=disable"},
	{"primary no port stays without", "postgres://u:p@my-db.internal/app", urlTestPrimary,
		"postgres://u:p@top1.nearest.of.my-db.internal/app"},
	{"primary empty port kept", "postgres://u:p@my-db.internal:/app", urlTestPrimary,
		"postgres://u:p@top1.nearest.of.my-db.internal:/app"},
	{"primary top2", "postgres://u:p@top2.nearest.of.my-db.internal:5432/app", urlTestPrimary,
		"postgres://u:p@top1.nearest.of.my-db.internal:5432/app"},
	{"primary unchanged", "postgres://u:p@top1.nearest.of.my-db.internal:5432/app", urlTestPrimary,
		"postgres://u:p@top1.nearest.of.my-db.internal:5432/app"},
	{"primary flycast", "postgres://u:p@my-db.flycast:5432/app", urlTestPrimary,
		"postgres://u:p@my-db.flycast:5432/app"},

	// Not production: returned as given, even if it would not parse.
	{"dev unchanged", "postgres://u:p@my-db.internal:5432/app", fly.URLConfig{Region: "fra", PrimaryRegion: "iad"},
		"postgres://u:p@my-db.internal:5432/app"},
	{"dev empty", "", fly.URLConfig{}, ""},
	{"dev garbage", "mysql://what", fly.URLConfig{Region: "fra", PrimaryRegion: "iad"}, "mysql://what"},
	{"dev keyword/value", "host=localhost", fly.URLConfig{}, "host=localhost"},

	// Keyword/value strings.
	{"kv prefix and port", "host=my-db.internal port=5432 user=u password=p dbname=app sslmode=disable", urlTestReplica,
		"host=top1.nearest.of.my-db.internal port=5433 user=u password=p dbname=app sslmode=disable"},
	{"kv port added", "host=my-db.internal user=u dbname=app", urlTestReplica,
		"host=top1.nearest.of.my-db.internal port=5433 user=u dbname=app"},
	{"kv port added before trailing space", "host=my-db.internal ", urlTestReplica,
		"host=top1.nearest.of.my-db.internal port=5433 "},
	{"kv port added before empty value", "host=my-db.internal sslmode=", urlTestReplica,
		"host=top1.nearest.of.my-db.internal port=5433 sslmode="},
	{"kv port added after quoted host", "host='my-db.internal'user=u", urlTestReplica,
		"host='top1.nearest.of.my-db.internal' port=5433 user=u"},
	{"kv top2", "user=u host=top2.nearest.of.my-db.internal port=5432", urlTestReplica,
		"user=u host=top1.nearest.of.my-db.internal port=5433"},
	{"kv flycast", "host=my-db.flycast port=5432", urlTestReplica,
		"host=my-db.flycast port=5433"},
	{"kv quoted values", "host='my-db.internal' port='5432' password='it\\'s a \\\\ secret'", urlTestReplica,
		"host='top1.nearest.of.my-db.internal' port='5433' password='it\\'s a \\\\ secret'"},
	{"kv spaces around equals", "host = my-db.internal\tport =\n5432  password=p", urlTestReplica,
		"host = top1.nearest.of.my-db.internal\tport =\n5433  password=p"},
	{"kv escaped unquoted password", `password=a\ b\\c host=my-db.internal`, urlTestReplica,
		`password=a\ b\\c host=top1.nearest.of.my-db.internal port=5433`},
	{"kv special password", "password=p@ss:/w?rd#&=x host=my-db.internal", urlTestReplica,
		"password=p@ss:/w?rd#&=x host=top1.nearest.of.my-db.internal port=5433"},
	{"kv ipv4", "host=10.0.0.1 port=5432", urlTestReplica,
		"host=10.0.0.1 port=5433"},
	{"kv ipv6", "host=fdaa:0:1:a7b::2 dbname=app", urlTestReplica,
		"host=fdaa:0:1:a7b::2 port=5433 dbname=app"},
	{"kv repeated host", "host=a.internal host=b.internal", urlTestReplica,
		"host=top1.nearest.of.a.internal host=top1.nearest.of.b.internal port=5433"},
	{"kv primary keeps port", "host=my-db.internal port=5432 dbname=app", urlTestPrimary,
		"host=top1.nearest.of.my-db.internal port=5432 dbname=app"},
	{"kv primary adds no port", "host=my-db.internal dbname=app", urlTestPrimary,
		"host=top1.nearest.of.my-db.internal dbname=app"},
	{"kv primary unchanged", "host=top1.nearest.of.my-db.internal", urlTestPrimary,
		"host=top1.nearest.of.my-db.internal"},
	{"kv trailing backslash", `host=top1.nearest.of.my-db.internal\`, urlTestReplica,
		"host=top1.nearest.of.my-db.internal port=5433"},
	{"kv empty port replaced", "host=my-db.internal port=", urlTestReplica,
		"host=top1.nearest.of.my-db.internal port=5433"},
}

func TestConfigureURL(t *testing.T) {
	for _, tc := range urlTestCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fly.ConfigureURL(tc.in, tc.cfg)
			if err != nil {
				t.Fatalf("ConfigureURL(%q) error: %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("ConfigureURL(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			// Rewriting is idempotent, so configuring twice is harmless.
			again, err := fly.ConfigureURL(got, tc.cfg)
			if tc.cfg.Production && (err != nil || again != got) {
				t.Errorf("ConfigureURL(ConfigureURL(%q)) = %q, %v; want %q", tc.in, again, err, got)
			}
		})
	}
}

func TestConfigureURLErrors(t *testing.T) {
	// Every input carries the password "hunter2", or a fragment of it,
	// somewhere the error must not quote.
	for _, tc := range []struct {
		name    string
		in      string
		cfg     fly.URLConfig
		wantMsg string // a fragment of the expected message
	}{
		{"no region", "postgres://u:hunter2@db.internal/app", fly.URLConfig{PrimaryRegion: "iad", Production: true}, "Region and PrimaryRegion"},
		{"no primary region", "postgres://u:hunter2@db.internal/app", fly.URLConfig{Region: "iad", Production: true}, "Region and PrimaryRegion"},
		{"empty", "", urlTestReplica, "empty connection string"},
		{"nul", "postgres://u:hunter2@db.internal/app\x00", urlTestReplica, "NUL"},
		{"unknown scheme", "mysql://u:hunter2@db.internal/app", urlTestReplica, `unsupported scheme "mysql"`},
		{"upper-case scheme", "POSTGRES://u:hunter2@db.internal/app", urlTestReplica, "unsupported scheme"},
		{"http scheme", "https://u:hunter2@db.internal/app", urlTestReplica, "unsupported scheme"},
		{"no host", "postgres://u:hunter2@/app", urlTestReplica, "no host"},
		{"no host no user", "postgres:///app?password=hunter2", urlTestReplica, "no host"},
		{"nothing after scheme", "postgres://", urlTestReplica, "no host"},
		{"empty brackets", "postgres://u:hunter2@[]/app", urlTestReplica, "no host"},
		{"unterminated bracket", "postgres://u:hunter2@[::1/app", urlTestReplica, "unterminated"},
		{"junk after bracket", "postgres://u:hunter2@[::1]x/app", urlTestReplica, "after the IPv6"},
		{"bracketed name", "postgres://u:hunter2@[db.internal]/app", urlTestReplica, "not an IPv6"},
		{"several hosts", "postgres://u:hunter2@a.internal:5432,b.internal:5432/app", urlTestReplica, "several hosts"},
		{"several hosts no ports", "postgres://u:hunter2@a.internal,b.internal/app", urlTestReplica, "several hosts"},
		{"socket host", "postgres://u:hunter2@%2Fvar%2Frun%2Fpostgresql/app", urlTestReplica, "Unix-domain socket"},
		{"slash in password", "postgres://u:hun/ter2@db.internal/app", urlTestReplica, "invalid port"},
		{"port out of range", "postgres://u:hunter2@db.internal:70000/app", urlTestReplica, "out of range"},
		{"port zero", "postgres://u:hunter2@db.internal:0/app", urlTestPrimary, "out of range"},
		{"bad escape in password", "postgres://u:hunter2%zz@db.internal/app", urlTestReplica, "percent-encoding or space in the password"},
		{"nul escape in password", "postgres://u:hunter2%00@db.internal/app", urlTestReplica, "in the password"},
		{"space in password", "postgres://u:hun ter2@db.internal/app", urlTestReplica, "in the password"},
		{"bad escape in user", "postgres://hunter2%g@db.internal/app", urlTestReplica, "in the user name"},
		{"bad escape in host", "postgres://u:hunter2@db%zz.internal/app", urlTestReplica, "in the host"},
		{"odd host characters", "postgres://u:hunter2@db!.internal/app", urlTestReplica, "neither a DNS name nor an IP"},
		{"bad escape in database", "postgres://u:hunter2@db.internal/ap%p", urlTestReplica, "database name"},
		{"query without equals", "postgres://u:hunter2@db.internal/app?hunter2", urlTestReplica, `exactly one "="`},
		{"query with two equals", "postgres://u@db.internal/app?password=hunter2=x", urlTestReplica, `exactly one "="`},
		{"query bad escape", "postgres://u@db.internal/app?password=hunter2%", urlTestReplica, "query parameter value"},
		{"query host", "postgres://u:hunter2@db.internal/app?host=other.internal", urlTestReplica, `"host" overrides`},
		{"query port", "postgres://u:hunter2@db.internal/app?sslmode=disable&port=5432", urlTestPrimary, `"port" overrides`},
		{"query hostaddr", "postgres://u:hunter2@db.internal/app?hostaddr=10.0.0.1", urlTestReplica, `"hostaddr" overrides`},
		{"leading space url", " postgres://u:hunter2@db.internal/app", urlTestReplica, "not a postgres:// URL"},
		{"no scheme separator", "postgres:/u:hunter2@db.internal", urlTestReplica, "not a postgres:// URL"},
		{"kv no host", "user=u password=hunter2 dbname=app", urlTestReplica, "no host keyword"},
		{"kv empty host", "host= password=hunter2", urlTestReplica, "neither a DNS name"},
		{"kv empty host at end", "password=hunter2 host=", urlTestReplica, "no host"},
		{"kv several hosts", "host=a.internal,b.internal password=hunter2", urlTestReplica, "several hosts"},
		{"kv socket", "host=/var/run/postgresql password=hunter2", urlTestReplica, "Unix-domain socket"},
		{"kv abstract socket", "host=@pg password=hunter2", urlTestReplica, "Unix-domain socket"},
		{"kv hostaddr", "host=db.internal hostaddr=10.0.0.1 password=hunter2", urlTestReplica, "hostaddr"},
		{"kv bad port", "host=db.internal port=hunter2", urlTestPrimary, "invalid port"},
		{"kv unquoted password with space", "password=hun ter2 host=db.internal", urlTestReplica, `no "=" after the keyword at offset 13`},
		{"kv unterminated quote", "host=db.internal password='hunter2", urlTestReplica, "unterminated quoted value starting at offset 26"},
		{"kv escaped closing quote", `host=db.internal password='hunter2\'`, urlTestReplica, "unterminated quoted value"},
		{"kv empty keyword", "host=db.internal =hunter2", urlTestReplica, "empty keyword"},
		{"kv host with space", "host='db internal' password=hunter2", urlTestReplica, "neither a DNS name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fly.ConfigureURL(tc.in, tc.cfg)
			if err == nil {
				t.Fatalf("ConfigureURL(%q) = %q, want an error", tc.in, got)
			}
			if got != "" {
				t.Errorf("ConfigureURL(%q) returned %q with its error, want \"\"", tc.in, got)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "fly: configure URL: ") {
				t.Errorf("error %q lacks the fly: configure URL: prefix", msg)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not mention %q", msg, tc.wantMsg)
			}
			for _, secret := range []string{"hunter", "ter2", "hun"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q leaks the password (%q)", msg, secret)
				}
			}
		})
	}
}

// TestConfigureURLAgreesWithPgx parses every rewritten string with pgx, the
// driver under gorm.io/driver/postgres: only the host and port may differ
// from what pgx reads in the original.
func TestConfigureURLAgreesWithPgx(t *testing.T) {
	for _, tc := range urlTestCases {
		if !tc.cfg.Production {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			before, err := pgconn.ParseConfig(tc.in)
			if err != nil {
				t.Fatalf("pgx cannot parse the input: %v", err)
			}
			out, err := fly.ConfigureURL(tc.in, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			after, err := pgconn.ParseConfig(out)
			if err != nil {
				t.Fatalf("pgx cannot parse %q: %v", out, err)
			}
			if after.User != before.User || after.Password != before.Password || after.Database != before.Database ||
				!maps.Equal(after.RuntimeParams, before.RuntimeParams) {
				t.Errorf("pgx reads %q differently from %q beyond host and port", out, tc.in)
			}
			replica := tc.cfg.Region != tc.cfg.PrimaryRegion
			switch {
			case replica && after.Port != 5433:
				t.Errorf("pgx port = %d, want 5433", after.Port)
			case !replica && after.Port != before.Port:
				t.Errorf("pgx port = %d, want %d as before", after.Port, before.Port)
			}
			h := strings.ToLower(after.Host)
			if !strings.HasPrefix(h, "top1.nearest.of.") && !strings.Contains(h, ".flycast") && !strings.Contains(h, ":") &&
				strings.Trim(h, "0123456789.") != "" {
				t.Errorf("pgx host = %q, want a top1.nearest.of., flycast or IP host", after.Host)
			}
		})
	}
}

// FuzzConfigureURL: ConfigureURL never panics, an error comes with "", and
// whatever it returns for input pgx accepts, pgx accepts too, reading the
// same user, password, database and parameters.
func FuzzConfigureURL(f *testing.F) {
	for _, tc := range urlTestCases {
		f.Add(tc.in, false)
		f.Add(tc.in, true)
	}
	// Found by this fuzzer: an appended port became the empty value of
	// "0=", and a port after a trailing backslash was escaped into the host.
	f.Add("host=0 0=", true)
	f.Add(`host=top1.nearest.of.x\`, true)
	f.Fuzz(func(t *testing.T, in string, replica bool) {
		cfg := urlTestPrimary
		if replica {
			cfg = urlTestReplica
		}
		out, err := fly.ConfigureURL(in, cfg)
		if err != nil {
			if out != "" {
				t.Fatalf("ConfigureURL(%q) = %q with error %v", in, out, err)
			}
			return
		}
		before, err := pgconn.ParseConfig(in)
		if err != nil {
			return
		}
		after, err := pgconn.ParseConfig(out)
		if err != nil {
			t.Fatalf("pgx accepts %q but not its rewrite %q: %v", in, out, err)
		}
		if after.User != before.User || after.Password != before.Password || after.Database != before.Database ||
			!maps.Equal(after.RuntimeParams, before.RuntimeParams) {
			t.Fatalf("pgx reads %q differently from %q beyond host and port", out, in)
		}
		if replica && after.Port != 5433 {
			t.Fatalf("ConfigureURL(%q) = %q: pgx port %d, want 5433", in, out, after.Port)
		}
	})
}
