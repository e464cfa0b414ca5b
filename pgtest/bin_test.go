package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMissingBinDir(t *testing.T) {
	_, err := Start(context.Background(), Options{BinDir: filepath.Join(t.TempDir(), "nope")})
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("Start with a missing BinDir: %v, want ErrNoPostgres", err)
	}
	if !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Errorf("error does not name the package to install: %v", err)
	}
}

// fakeBinDir creates dir with empty executables named like the required
// binaries.
func fakeBinDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range requiredBinaries() {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindBinDir(t *testing.T) {
	notFound := func(string) (string, error) { return "", errors.New("not found") }
	noPgConfig := func() (string, error) { return "", errors.New("no pg_config") }

	t.Run("Nothing", func(t *testing.T) {
		_, err := findBinDir(notFound, noPgConfig, t.TempDir())
		if !errors.Is(err, ErrNoPostgres) {
			t.Fatalf("err = %v, want ErrNoPostgres", err)
		}
	})

	t.Run("HighestVersion", func(t *testing.T) {
		root := t.TempDir()
		for _, v := range []string{"9.6", "13", "15", "14"} {
			fakeBinDir(t, filepath.Join(root, v, "bin"))
		}
		// Not a version, and a version without binaries: both ignored.
		fakeBinDir(t, filepath.Join(root, "common", "bin"))
		if err := os.MkdirAll(filepath.Join(root, "16", "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := findBinDir(notFound, noPgConfig, root)
		if want := filepath.Join(root, "15", "bin"); got != want || err != nil {
			t.Errorf("findBinDir = %q, %v; want %q", got, err, want)
		}
	})

	t.Run("PathSymlink", func(t *testing.T) {
		real := filepath.Join(t.TempDir(), "15", "bin")
		fakeBinDir(t, real)
		onPath := t.TempDir()
		for _, name := range []string{"postgres", "initdb"} {
			if err := os.Symlink(filepath.Join(real, name), filepath.Join(onPath, name)); err != nil {
				t.Fatal(err)
			}
		}
		lookPath := func(name string) (string, error) { return filepath.Join(onPath, name), nil }
		got, err := findBinDir(lookPath, noPgConfig, "")
		if got != real || err != nil {
			t.Errorf("findBinDir = %q, %v; want %q", got, err, real)
		}
	})

	t.Run("PgConfig", func(t *testing.T) {
		dir := t.TempDir()
		fakeBinDir(t, dir)
		got, err := findBinDir(notFound, func() (string, error) { return dir, nil }, "")
		if got != dir || err != nil {
			t.Errorf("findBinDir = %q, %v; want %q", got, err, dir)
		}
	})
}

// fakeTB records StartT's verdict instead of stopping the test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper()                         {}
func (f *fakeTB) Logf(format string, args ...any) {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
}

func TestStartTWithoutPostgres(t *testing.T) {
	opts := Options{BinDir: filepath.Join(t.TempDir(), "nope")}

	t.Setenv("CI", "")
	tb := &fakeTB{}
	if c := StartT(tb, opts); c != nil || !tb.skipped || tb.failed {
		t.Errorf("outside CI: cluster=%v skipped=%v failed=%v, want a skip", c, tb.skipped, tb.failed)
	}

	t.Setenv("CI", "true")
	tb = &fakeTB{}
	if c := StartT(tb, opts); c != nil || tb.skipped || !tb.failed {
		t.Errorf("in CI: cluster=%v skipped=%v failed=%v, want a failure", c, tb.skipped, tb.failed)
	}
	if !strings.Contains(tb.msg, "apt-get install postgresql") {
		t.Errorf("failure message does not name the package: %s", tb.msg)
	}
}
