package pgtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A node's directory names its owner — the process that created it — in a
// file, so that the directories of an owner that died without cleaning up
// (SIGKILL, a crash, a test binary killed at its timeout) are removed by the
// next cluster started on the machine. The kernel kills the servers of a
// dead owner (see sysProcAttr); only their files would remain.

const ownerFile = "pgtest.owner"

// dirPrefix starts the name of every node directory pgtest creates.
const dirPrefix = "pgtest-"

// ownerID identifies a process across PID reuse: its PID and its start
// time in clock ticks since boot (field 22 of /proc/PID/stat).
func ownerID(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return "", false
	}
	return strconv.Itoa(pid) + " " + f[19], true
}

// markOwner records the current process as the owner of dir.
func markOwner(dir string) error {
	id, ok := ownerID(os.Getpid())
	if !ok {
		return nil // no /proc: nothing to clean up by later
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(id+"\n"), 0o644)
}

// ownerAlive reports whether the process named by an owner file's content
// is still the one that wrote it.
func ownerAlive(content string) bool {
	f := strings.Fields(content)
	if len(f) != 2 {
		return true // not ours to judge
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return true
	}
	now, ok := ownerID(pid)
	return ok && now == f[0]+" "+f[1]
}

// staleAge is how old a node directory without an owner file must be
// before it is taken for one left by a dead owner (a live owner writes the
// file right after creating the directory).
const staleAge = time.Hour

// removeStale removes, from tmp, node directories whose owner has died.
// It returns the directories removed.
func removeStale(tmp string, now time.Time) []string {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), dirPrefix) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		content, err := os.ReadFile(filepath.Join(dir, ownerFile))
		switch {
		case err == nil:
			if ownerAlive(string(content)) {
				continue
			}
		case os.IsNotExist(err):
			info, err := e.Info()
			if err != nil || now.Sub(info.ModTime()) < staleAge {
				continue
			}
		default:
			continue
		}
		if os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}
