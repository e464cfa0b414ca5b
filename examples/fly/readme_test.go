package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestREADMETwoRegions runs the shell blocks of the root README's section
// "Two regions on one machine" as written — the database pair, a
// primary-region and a replica-region process of this app, and the
// requests — with only the ports (which other processes on this machine
// may hold) and the env file's path replaced. The write through the
// replica region must be forwarded and visible there at once.
func TestREADMETwoRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three processes")
	}
	if _, err := pgtest.FindBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v", err)
		}
		t.Skipf("no PostgreSQL: %v", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := shellBlocks(t, string(readme), "## Two regions on one machine")
	if len(blocks) != 4 {
		t.Fatalf("the section has %d sh blocks, want 4 (database pair, primary region, replica region, requests)", len(blocks))
	}
	replace := []string{"/tmp/flypg-regions.env", filepath.Join(t.TempDir(), "regions.env")}
	for _, port := range []string{"5480", "5481", "8080", "8081"} {
		replace = append(replace, port, strconv.Itoa(testkit.FreePort(t)))
	}
	r := strings.NewReplacer(replace...)
	for i := range blocks {
		blocks[i] = r.Replace(blocks[i])
	}

	// Building the three commands and starting the cluster take a while on
	// a loaded machine; each step waits for what a reader would see.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	startBlock(ctx, t, "terminal 1", blocks[0], "ready")
	iad := startBlock(ctx, t, "terminal 2", blocks[1], "msg=serving")
	syd := startBlock(ctx, t, "terminal 3", blocks[2], "msg=serving")

	out, err := runBlock(ctx, blocks[3])
	if err != nil {
		t.Fatalf("terminal 4: %v\n%s\nterminal 2 (iad):\n%s\nterminal 3 (syd):\n%s", err, out, iad(), syd())
	}
	for _, want := range []string{`"forwarded_to": "iad"`, `"visible_here": true`, `"region": "syd"`, `"message": "hello from syd"`} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal 4's output lacks %s:\n%s", want, out)
		}
	}
}

// shellBlocks returns the bodies of the ```sh blocks under heading, up to
// the next heading of the same level.
func shellBlocks(t *testing.T, doc, heading string) []string {
	t.Helper()
	start := strings.Index(doc, "\n"+heading+"\n")
	if start < 0 {
		t.Fatalf("README has no section %q", heading)
	}
	section := doc[start+len(heading)+2:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var blocks []string
	for {
		i := strings.Index(section, "```sh\n")
		if i < 0 {
			return blocks
		}
		section = section[i+len("```sh\n"):]
		j := strings.Index(section, "```")
		if j < 0 {
			t.Fatal("unterminated sh block")
		}
		blocks = append(blocks, section[:j])
		section = section[j+3:]
	}
}

// command runs block with bash in the repository root, in a process group
// of its own (as a terminal's job is), with none of flypg's or Fly's
// variables from this process's environment.
func command(ctx context.Context, block string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "bash", "-euc", block)
	cmd.Dir = "../.."
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLY") && !strings.HasPrefix(kv, "PRIMARY_") && !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "MY_REGION=") && !strings.HasPrefix(kv, "PORT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A cancelled context is Ctrl-C for the whole job.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	return cmd
}

// startBlock starts a long-running block and waits until its output says
// ready; the test's end interrupts it, as Ctrl-C would, and waits for it.
// It returns the block's output so far, for a failure's report.
func startBlock(ctx context.Context, t *testing.T, name, block, ready string) func() string {
	t.Helper()
	cmd := command(ctx, block)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.CloseWithError(io.EOF)
		exited <- err
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	lines := make(chan string)
	var (
		mu  sync.Mutex
		log strings.Builder
	)
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return log.String()
	}
	go func() {
		defer close(lines)
		s := bufio.NewScanner(pr)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("%s ended before it was ready: %v\n%s", name, <-exited, output())
			}
			mu.Lock()
			log.WriteString(line + "\n")
			mu.Unlock()
			if strings.Contains(line, ready) {
				// Keep draining its output, so that it never blocks on a
				// full pipe.
				go func() {
					for line := range lines {
						mu.Lock()
						log.WriteString(line + "\n")
						mu.Unlock()
					}
				}()
				return output
			}
		case <-ctx.Done():
			t.Fatalf("%s not ready: %v\n%s", name, ctx.Err(), output())
		}
	}
}

// runBlock runs a short block and returns its output.
func runBlock(ctx context.Context, block string) (string, error) {
	cmd := command(ctx, block)
	out, err := cmd.CombinedOutput()
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w (%v)", err, ctx.Err())
	}
	return string(out), err
}
