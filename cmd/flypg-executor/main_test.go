package main

import "testing"

func TestPrimaryDSNFromEnvironment(t *testing.T) {
	t.Setenv("FLYPG_PRIMARY_DSN", "")
	t.Setenv("DATABASE_URL", "")
	if dsn, from := primaryDSN(""); dsn != "" || from != "" {
		t.Fatalf("nothing set: %q from %q", dsn, from)
	}
	t.Setenv("DATABASE_URL", "postgres://b")
	if dsn, from := primaryDSN(""); dsn != "postgres://b" || from != "$DATABASE_URL" {
		t.Fatalf("DATABASE_URL: %q from %q", dsn, from)
	}
	t.Setenv("FLYPG_PRIMARY_DSN", "postgres://a")
	if dsn, from := primaryDSN(""); dsn != "postgres://a" || from != "$FLYPG_PRIMARY_DSN" {
		t.Fatalf("FLYPG_PRIMARY_DSN first: %q from %q", dsn, from)
	}
	if dsn, from := primaryDSN("postgres://c"); dsn != "postgres://c" || from != "-dsn" {
		t.Fatalf("the flag: %q from %q", dsn, from)
	}
}
