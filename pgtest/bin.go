package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoPostgres reports that the PostgreSQL server binaries could not be
// found. Test with errors.Is; the wrapping error lists where pgtest looked.
var ErrNoPostgres = errors.New("pgtest: PostgreSQL server binaries (postgres, initdb, pg_basebackup) not found; install them with `apt-get install postgresql` (Debian/Ubuntu) or set Options.BinDir")

// requiredBinaries are the programs a cluster needs. Promotion uses SQL
// (pg_promote), so pg_ctl is not required.
func requiredBinaries() []string {
	return []string{"postgres", "initdb", "pg_basebackup"}
}

// FindBinDir returns the directory holding the PostgreSQL server binaries.
// It looks at PATH (postgres and initdb), then at `pg_config --bindir`, then
// at the highest version under /usr/lib/postgresql/*/bin (Debian's layout,
// which is not on PATH). The error wraps ErrNoPostgres.
func FindBinDir() (string, error) {
	return findBinDir(exec.LookPath, pgConfigBinDir, "/usr/lib/postgresql")
}

// findBinDir is FindBinDir with its sources injected, for tests.
func findBinDir(lookPath func(string) (string, error), pgConfig func() (string, error), libRoot string) (string, error) {
	var searched []string

	// PATH: Debian-like systems may put symlinks such as
	// /usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres there,
	// so resolve them: the directory of the real binary is the one that
	// also holds pg_basebackup and the share/lib paths postgres expects.
	if p, err := lookPath("postgres"); err == nil {
		if _, err := lookPath("initdb"); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				p = real
			}
			dir := filepath.Dir(p)
			searched = append(searched, dir+" (PATH)")
			if checkBinDir(dir) == nil {
				return dir, nil
			}
		}
	} else {
		searched = append(searched, "PATH")
	}

	if pgConfig != nil {
		if dir, err := pgConfig(); err == nil && dir != "" {
			searched = append(searched, dir+" (pg_config)")
			if checkBinDir(dir) == nil {
				return dir, nil
			}
		}
	}

	if libRoot != "" {
		searched = append(searched, filepath.Join(libRoot, "*", "bin"))
		for _, dir := range versionedBinDirs(libRoot) {
			if checkBinDir(dir) == nil {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("%w (searched %s)", ErrNoPostgres, strings.Join(searched, ", "))
}

// pgConfigBinDir asks pg_config, which is often installed (libpq-dev) even
// where the server binaries are not on PATH.
func pgConfigBinDir() (string, error) {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// versionedBinDirs lists root/VERSION/bin, highest version first. Versions
// compare numerically so that 13 beats 9.6.
func versionedBinDirs(root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	type cand struct {
		dir     string
		version []int
	}
	var cands []cand
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		cands = append(cands, cand{filepath.Join(root, e.Name(), "bin"), v})
	}
	sort.Slice(cands, func(i, j int) bool { return versionLess(cands[j].version, cands[i].version) })
	dirs := make([]string, len(cands))
	for i, c := range cands {
		dirs[i] = c.dir
	}
	return dirs
}

func parseVersion(s string) ([]int, bool) {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

func versionLess(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// checkBinDir reports whether dir holds every required binary; the error
// wraps ErrNoPostgres.
func checkBinDir(dir string) error {
	for _, name := range requiredBinaries() {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%w (missing %s)", ErrNoPostgres, p)
		}
	}
	return nil
}
