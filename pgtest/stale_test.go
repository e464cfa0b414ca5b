package pgtest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRemoveStale(t *testing.T) {
	tmp := t.TempDir()
	self, ok := ownerID(os.Getpid())
	if !ok {
		t.Skip("no /proc")
	}
	selfPID := strconv.Itoa(os.Getpid())
	mk := func(name, owner string, age time.Duration) string {
		dir := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(dir, when, when); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	cases := []struct {
		name, owner string
		age         time.Duration
		removed     bool
	}{
		{"pgtest-live-1", self, 0, false},
		{"pgtest-dead-1", "2147483646 1", 0, true},            // no such process
		{"pgtest-reused-1", selfPID + " 1", 0, true},          // the PID now names another process
		{"pgtest-fresh-1", "", 0, false},                      // its owner may be about to write the file
		{"pgtest-old-1", "", 2 * staleAge, true},              // created by an owner long gone
		{"pgtest-odd-1", "not an owner", 0, false},            // not ours to judge
		{"other-dead-1", "2147483646 1", 2 * staleAge, false}, // not a pgtest directory
	}
	for _, tc := range cases {
		mk(tc.name, tc.owner, tc.age)
	}
	removed := removeStale(tmp, time.Now())
	for _, tc := range cases {
		_, err := os.Stat(filepath.Join(tmp, tc.name))
		if gone := os.IsNotExist(err); gone != tc.removed {
			t.Errorf("%s: removed = %v, want %v (removed: %v)", tc.name, gone, tc.removed, removed)
		}
	}
}

// TestStaleDirsOfKilledOwner kills a process that owns a running cluster
// and checks that the next cluster started removes what it left.
func TestStaleDirsOfKilledOwner(t *testing.T) {
	if os.Getenv("PGTEST_STALE_CHILD") == "1" {
		c, err := Start(testCtx(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("DIR " + c.Primary.dir + "\n")
		select {} // until killed
	}
	requirePostgres(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestStaleDirsOfKilledOwner$", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), "PGTEST_STALE_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "DIR "); ok {
			dir = d
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if dir == "" {
		t.Fatal("the child started no cluster")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed owner's directory should still be there before the next start: %v", err)
	}
	StartT(t, Options{})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s: still there after the next cluster started (err %v)", dir, err)
	}
}
