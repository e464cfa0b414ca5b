package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// executorProcess is cmd/flypg-executor running as a process of its own,
// so that its memory and CPU are its own accounting's, not the bench's.
type executorProcess struct {
	cmd       *exec.Cmd
	addr      string // gRPC
	debugAddr string // net/http/pprof
	exited    chan struct{}
	log       *os.File
}

// executorOptions configure one executor process.
type executorOptions struct {
	dir       string        // where NAME-executor.log goes
	name      string        // the suite's name, for the log file
	dsn       string        // the primary, with the pool's size
	secret    string        // "" serves insecure (loopback only)
	window    time.Duration // -dedup-window; 0 the default
	durable   bool          // -durable-dedup
	functions []string      // -function name=SQL
	env       []string      // added to the process's environment
}

var (
	servingRE  = regexp.MustCompile(`serving"? addr=(\S+)`)
	profilesRE = regexp.MustCompile(`profiles"? addr=(\S+)`)
)

// startExecutorProcess builds cmd/flypg-executor and runs it with its
// profiles on loopback and its log in o.dir.
func startExecutorProcess(ctx context.Context, o executorOptions) (*executorProcess, error) {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "flypg-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "flypg-executor")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/flypg/flypg/cmd/flypg-executor")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build cmd/flypg-executor: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(o.dir, o.name+"-executor.log"))
	if err != nil {
		return nil, err
	}
	args := []string{"-listen", "127.0.0.1:0", "-debug-addr", "127.0.0.1:0"}
	if o.window > 0 {
		args = append(args, "-dedup-window", o.window.String())
	}
	if o.durable {
		args = append(args, "-durable-dedup")
	}
	for _, f := range o.functions {
		args = append(args, "-function", f)
	}
	if o.secret == "" {
		args = append(args, "-insecure")
	}
	cmd := exec.Command(bin, args...)
	// The DSN travels in the environment, as the command reads it by
	// default, not on its command line.
	cmd.Env = append(os.Environ(), "FLYPG_SECRET="+o.secret, "FLYPG_PRIMARY_DSN="+o.dsn)
	cmd.Env = append(cmd.Env, o.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	x := &executorProcess{cmd: cmd, exited: make(chan struct{}), log: logf}
	addrs := make(chan [2]string, 1)
	go func() {
		var grpcAddr, debugAddr string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if m := servingRE.FindStringSubmatch(line); m != nil {
				grpcAddr = m[1]
			}
			if m := profilesRE.FindStringSubmatch(line); m != nil {
				debugAddr = m[1]
			}
			if grpcAddr != "" && debugAddr != "" {
				select {
				case addrs <- [2]string{grpcAddr, debugAddr}:
				default:
				}
			}
		}
		io.Copy(logf, stderr)
		cmd.Wait()
		close(x.exited)
	}()
	select {
	case a := <-addrs:
		x.addr, x.debugAddr = a[0], a[1]
		return x, nil
	case <-x.exited:
		return nil, fmt.Errorf("flypg-executor exited before serving; see %s", logf.Name())
	case <-time.After(30 * time.Second):
		x.stop()
		return nil, fmt.Errorf("flypg-executor did not serve within 30s; see %s", logf.Name())
	}
}

func (x *executorProcess) stop() {
	x.cmd.Process.Signal(os.Interrupt)
	select {
	case <-x.exited:
	case <-time.After(15 * time.Second):
		x.cmd.Process.Kill()
		<-x.exited
	}
	x.log.Close()
}

func (x *executorProcess) pid() int { return x.cmd.Process.Pid }

// get fetches a path of the executor's profile server.
func (x *executorProcess) get(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+x.debugAddr+path, nil)
	if err != nil {
		return "", err
	}
	// No connection stays open: it would count as a file descriptor and
	// two goroutines more at the soak's second measurement.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

// clockTick is the kernel's USER_HZ, the unit of /proc/PID/stat's times:
// 100 on every Linux architecture Go supports.
const clockTick = 100

// procCPU returns the CPU time a process has used, user and system, and
// with children that it has waited for (PostgreSQL's postmaster reaps its
// backends, so their time ends up there).
func procCPU(pid int, withChildren bool) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15, cutime 16,
	// cstime 17.
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	n := 2
	if withChildren {
		n = 4
	}
	var ticks int64
	for _, v := range f[11 : 11+n] {
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / clockTick, nil
}

// parentPID reads a process's parent from /proc.
func parentPID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.Atoi(f[1])
}

// treeCPU is the CPU time of a PostgreSQL server: its postmaster,
// including the backends it has reaped, plus every live child.
func treeCPU(postmaster int) (time.Duration, error) {
	total, err := procCPU(postmaster, true)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := parentPID(pid); err != nil || pp != postmaster {
			continue
		}
		// A child may exit between the two reads; its time then moves to
		// the postmaster's reaped total, which the next sample sees.
		if t, err := procCPU(pid, false); err == nil {
			total += t
		}
	}
	return total, nil
}

// selfCPU is the CPU time of this process, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
