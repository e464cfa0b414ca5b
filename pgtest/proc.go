package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// postmaster is a running postgres server process owned by this process.
// One goroutine per postmaster waits for it; it ends when the process
// exits, which Node.Stop, Node.Kill and Cluster.Close guarantee.
type postmaster struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // result of cmd.Wait, valid after done is closed
}

// startPostmaster starts `postgres` directly rather than through
// `pg_ctl start`, which would daemonize it and leave no owner to reap it or
// to kill it when this process dies.
func startPostmaster(r *runner, n *Node) (*postmaster, error) {
	logFile, err := os.OpenFile(n.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %s: open log: %w", n.name, err)
	}
	// The child gets its own copy of the descriptor.
	defer logFile.Close()

	// context.Background: the server outlives the call that starts it; Stop,
	// Kill and Close end it.
	cmd := r.command(context.Background(), n.dir, "postgres",
		"-D", n.dataDir,
		"-p", strconv.Itoa(n.Port()),
		// Per node, so on the command line rather than in postgresql.conf,
		// which replicas copy from the primary.
		"-k", n.dir,
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: %s: start postgres: %w", n.name, err)
	}
	p := &postmaster{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *postmaster) pid() int { return p.cmd.Process.Pid }

func (p *postmaster) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to timeout for the process to exit.
func (p *postmaster) waitExit(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// crash SIGKILLs the postmaster and all its children, like a machine
// crash. Killing only the postmaster would leave its children (which call
// setsid, so they are not in its process group) attached to the shared
// memory for a while, and a restart would fail with "pre-existing shared
// memory block is still in use". SIGSTOP first freezes the postmaster so
// that it cannot fork a child we do not know about.
func (p *postmaster) crash() error {
	pid := p.pid()
	if p.exited() {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	children := childPIDs(pid)
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgtest: kill postmaster %d: %w", pid, err)
	}
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	if !p.waitExit(10 * time.Second) {
		return fmt.Errorf("pgtest: postmaster %d did not exit after SIGKILL", pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range children {
		for !processGone(c) {
			if time.Now().After(deadline) {
				return fmt.Errorf("pgtest: postgres child process %d did not exit after SIGKILL", c)
			}
			time.Sleep(5 * time.Millisecond) // polling /proc: no event to wait on
		}
	}
	return nil
}

// childPIDs lists the processes whose parent is ppid, from /proc.
func childPIDs(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, parent, ok := procStat(pid)
		if ok && parent == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processGone reports whether pid no longer runs. Zombies count as gone:
// orphaned postgres children are reparented to init, which may be slow (or,
// in some containers, fail) to reap them, but they hold no resources.
func processGone(pid int) bool {
	state, _, ok := procStat(pid)
	return !ok || state == 'Z' || state == 'X'
}

// procStat reads the state and parent pid of a process from
// /proc/PID/stat. The command name may contain spaces and parentheses, so
// fields are counted from the last ')'.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 2 || len(fields[0]) == 0 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], ppid, true
}
