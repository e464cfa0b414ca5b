package secret

import (
	"fmt"
	"strings"
	"testing"
)

func TestDSN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"postgres://app:hunter2@db.internal:5432/app?sslmode=disable", "postgres://app:[redacted]@db.internal:5432/app?sslmode=disable"},
		{"postgresql://app@db/app", "postgresql://app@db/app"},
		{"postgres://db/app?password=hunter2&user=app", "postgres://db/app?password=[redacted]&user=app"},
		{"postgres://app:hun%40ter2@db/app", "postgres://app:[redacted]@db/app"},
		{"host=db user=app password=hunter2 dbname=app", "host=db user=app password=[redacted] dbname=app"},
		{"host=db password = 'hun ter\\'2' sslpassword=hunter2", "host=db password = [redacted] sslpassword=[redacted]"},
		{"host=db PASSWORD=hunter2", "host=db PASSWORD=[redacted]"},
		{"host=db password='hunter2", Mask},
		{"hunter2", Mask},
		{"postgres://app:hunter2@[::1/app", Mask},
	} {
		got := RedactDSN(tc.in)
		if got != tc.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "hunter2") || strings.Contains(got, "hun ter") {
			t.Errorf("RedactDSN(%q) reveals the password: %q", tc.in, got)
		}
	}
}

func TestRedact(t *testing.T) {
	if Redact("") != "" || Redact("x") != Mask {
		t.Fatal("Secret")
	}
	if got := RedactAll([]string{"a", ""}); len(got) != 2 || got[0] != Mask || got[1] != "" {
		t.Fatalf("Secrets = %q", got)
	}
	if RedactAll(nil) != nil {
		t.Fatal("Secrets(nil) is not nil")
	}
}

type config struct {
	Name, Secret string
}

type configView config

func (c config) Format(f fmt.State, verb rune) {
	v := configView(c)
	v.Secret = Redact(v.Secret)
	Format(f, verb, v, "secret.config")
}

func TestFormat(t *testing.T) {
	c := config{Name: "n", Secret: "hunter2"}
	for verb, want := range map[string]string{
		"%v":  "{n [redacted]}",
		"%+v": "{Name:n Secret:[redacted]}",
		"%#v": `secret.config{Name:"n", Secret:"[redacted]"}`,
		"%s":  "{n [redacted]}",
		"%d":  "{%!d(string=n) %!d(string=[redacted])}",
	} {
		if got := fmt.Sprintf(verb, c); got != want {
			t.Errorf("%s: %s, want %s", verb, got, want)
		}
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" a , ,b,")
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("SplitList = %q", got)
	}
	if SplitList("") != nil {
		t.Fatal("SplitList of nothing is not nil")
	}
}
