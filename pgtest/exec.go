package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// runner runs PostgreSQL programs from one bin directory as the right OS
// user: initdb and postgres refuse to run as root, so a root process runs
// them as "postgres" and hands that user the directories it creates.
type runner struct {
	binDir string
	cred   *syscall.Credential // nil: run as the current user
}

func newRunner(binDir string) (*runner, error) {
	r := &runner{binDir: binDir}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to run as root, but the OS user \"postgres\" to run it as is missing (it comes with `apt-get install postgresql`): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: gid of user postgres: %w", err)
	}
	// Groups is empty on purpose: the child must not keep root's
	// supplementary groups.
	r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return r, nil
}

// sysProcAttr puts a child in its own process group, so a terminal Ctrl-C
// reaches only this process (which then shuts the cluster down in order),
// and has the kernel SIGKILL it when this process dies, so a crashed test
// leaves no server behind. Go sets the death signal after switching user,
// which matters because a credential change clears it.
func (r *runner) sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: r.cred,
	}
}

// command prepares bin/name with args, run in dir; ctx's end kills it.
func (r *runner) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, name), args...)
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.SysProcAttr = r.sysProcAttr()
	return cmd
}

// run runs a short-lived program and includes its output in the error.
func (r *runner) run(ctx context.Context, dir, name string, args ...string) error {
	cmd := r.command(ctx, dir, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// mkdirTemp creates a temporary directory owned by the user PostgreSQL
// runs as.
func (r *runner) mkdirTemp(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if r.cred != nil {
		if err := os.Chown(dir, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

// childEnv is this process's environment without PG* variables, which
// would silently redirect libpq-based tools (PGHOST, PGPORT, PGDATA...), and
// with HOME pointing somewhere the postgres user may read.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "LC_ALL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "LC_ALL=C")
}
