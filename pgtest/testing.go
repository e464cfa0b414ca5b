package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// StartT starts a cluster for a test or benchmark and closes it in
// tb.Cleanup. When the PostgreSQL binaries are missing it skips the test,
// unless the environment variable CI is "true": CI must never skip silently,
// so there it fails the test. Any other error fails the test. Progress
// messages go to tb.Logf unless opts.Logf is set.
func StartT(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if errors.Is(err, ErrNoPostgres) {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("pgtest: PostgreSQL is required in CI: %v", err)
		} else {
			tb.Skipf("pgtest: skipping: %v", err)
		}
		return nil // reached only with a fake testing.TB
	}
	if err != nil {
		tb.Fatalf("pgtest: start cluster: %v", err)
		return nil
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("pgtest: close cluster: %v", err)
		}
	})
	return c
}

// NewLinkT starts a link for a test (see NewLink) and closes it in
// tb.Cleanup; an error fails the test.
func NewLinkT(tb testing.TB, name, upstream string) *Link {
	tb.Helper()
	l, err := NewLink(name, upstream)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}
