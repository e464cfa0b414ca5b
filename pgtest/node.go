package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// defaultWait bounds start-up, shutdown and replication waits whose context
// has no deadline, so that a broken cluster fails a test instead of hanging
// it until the test binary's global timeout.
const defaultWait = 60 * time.Second

// pollInterval is how often readiness and replication are polled.
const pollInterval = 5 * time.Millisecond

// Node is one PostgreSQL server of a Cluster: the primary or a replica. Its
// methods are safe for concurrent use; Start, Stop and Kill are serialised.
type Node struct {
	name    string
	dir     string // temporary directory: data/, postgres.log, sockets
	dataDir string
	port    atomic.Int64 // changes only if the first start finds it taken
	run     *runner

	mu     sync.Mutex
	pm     *postmaster // nil while stopped
	closed bool        // set by Cluster.Close; the node cannot start again
}

func newNode(r *runner, name string) (*Node, error) {
	dir, err := r.mkdirTemp(dirPrefix + name + "-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %s: create directory: %w", name, err)
	}
	if err := markOwner(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: %s: %w", name, err)
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: %s: %w", name, err)
	}
	n := &Node{name: name, dir: dir, dataDir: filepath.Join(dir, "data"), run: r}
	n.port.Store(int64(port))
	return n, nil
}

// Name returns the node's name: "primary", "replica1", "replica2"... It is
// also the replica's application_name on the primary.
func (n *Node) Name() string { return n.name }

// Addr returns the node's TCP address, "127.0.0.1:PORT".
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port())) }

// Port returns the node's TCP port. It stays the same across restarts.
func (n *Node) Port() int { return int(n.port.Load()) }

// DSN returns a connection URL for the superuser "postgres" on database
// dbname ("postgres" when empty), e.g.
// "postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable".
func (n *Node) DSN(dbname string) string {
	if dbname == "" {
		dbname = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", n.Addr(), dbname)
}

// DataDir returns the node's data directory (PGDATA).
func (n *Node) DataDir() string { return n.dataDir }

// PID returns the postmaster's process id, or 0 while the node is stopped.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pm == nil || n.pm.exited() {
		return 0
	}
	return n.pm.pid()
}

// Start starts a stopped node on its old port and waits until it accepts
// connections and, while it is a replica, streams from the primary again.
// Without a deadline in ctx it waits at most a minute.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("pgtest: %s: cluster is closed", n.name)
	}
	if n.pm != nil && !n.pm.exited() {
		return fmt.Errorf("pgtest: %s: already running", n.name)
	}
	return n.startLocked(ctx)
}

// startFirst starts a new node. The port was free when newNode picked it,
// but another process may have taken it since; then it retries on another.
func (n *Node) startFirst(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = n.startLocked(ctx)
		if err == nil || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
		port, perr := freePort()
		if perr != nil {
			return errors.Join(err, perr)
		}
		n.port.Store(int64(port))
	}
	return err
}

func (n *Node) startLocked(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	pm, err := startPostmaster(n.run, n)
	if err != nil {
		return err
	}
	n.pm = pm
	if err := n.waitReady(ctx, pm); err != nil {
		// Leave nothing half-started behind.
		_ = pm.crash()
		n.pm = nil
		return err
	}
	return nil
}

// waitReady polls real connections until the server answers and, if it is
// in recovery, its WAL receiver streams.
func (n *Node) waitReady(ctx context.Context, pm *postmaster) error {
	// A probe must not outlive the server: if it exits, something else
	// may be listening on the port and never answer.
	probeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-pm.done:
			cancel()
		case <-probeCtx.Done():
		}
	}()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := n.probe(probeCtx)
		if err == nil {
			return nil
		}
		select {
		case <-pm.done:
			return fmt.Errorf("pgtest: %s: postgres exited during start-up (%v)\n%s", n.name, pm.err, n.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("pgtest: %s: not ready: %w (last error: %v)\n%s", n.name, ctx.Err(), err, n.LogTail(20))
		case <-ticker.C:
		}
	}
}

var errNotStreaming = errors.New("replica is not streaming yet")

func (n *Node) probe(ctx context.Context) error {
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var ready bool
	var dataDir string
	err = conn.QueryRow(ctx, `SELECT NOT pg_is_in_recovery()
		OR EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'),
		current_setting('data_directory')`).Scan(&ready, &dataDir)
	if err != nil {
		return err
	}
	if dataDir != n.dataDir {
		// Another server took the port before ours could bind it; ours
		// will exit, and startFirst retries on another port.
		return fmt.Errorf("port %d is served by another server (data directory %s)", n.Port(), dataDir)
	}
	if !ready {
		return errNotStreaming
	}
	return nil
}

// connect opens a connection, giving up after a few seconds so that a
// stuck attempt does not use up the caller's whole deadline.
func (n *Node) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pgx.Connect(ctx, n.DSN(""))
}

// Stop shuts the node down with a fast shutdown (SIGINT: open transactions
// are rolled back, then a checkpoint) and waits until it has exited. If ctx
// ends first, the node is killed and ctx's error returned. Stopping a
// stopped node does nothing.
func (n *Node) Stop(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopLocked(ctx)
}

func (n *Node) stopLocked(ctx context.Context) error {
	pm := n.pm
	if pm == nil {
		return nil
	}
	n.pm = nil
	if pm.exited() {
		return nil
	}
	if err := pm.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return errors.Join(fmt.Errorf("pgtest: %s: signal postgres: %w", n.name, err), pm.crash())
	}
	select {
	case <-pm.done:
		return nil
	case <-ctx.Done():
		if err := pm.crash(); err != nil {
			return fmt.Errorf("pgtest: %s: fast shutdown timed out (%v), and kill failed: %w", n.name, ctx.Err(), err)
		}
		return fmt.Errorf("pgtest: %s: fast shutdown did not finish, killed: %w\n%s", n.name, ctx.Err(), n.LogTail(20))
	}
}

// Kill crashes the node: it SIGKILLs the postmaster and its children, as a
// power loss would, and waits until they are gone. A later Start runs crash
// recovery. Killing a stopped node does nothing.
func (n *Node) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pm := n.pm
	if pm == nil {
		return nil
	}
	n.pm = nil
	if err := pm.crash(); err != nil {
		return fmt.Errorf("pgtest: %s: %w", n.name, err)
	}
	return nil
}

// Promote turns a replica into a primary (pg_promote) and waits until it
// leaves recovery. The Cluster is not rewired: Cluster.Primary remains the
// old primary, and other replicas keep following it.
func (n *Node) Promote(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	conn, err := n.connect(ctx)
	if err != nil {
		return fmt.Errorf("pgtest: %s: promote: %w", n.name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	wait := 60
	if dl, ok := ctx.Deadline(); ok {
		wait = max(1, int(time.Until(dl).Seconds()))
	}
	var promoted bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, $1)", wait).Scan(&promoted); err != nil {
		return fmt.Errorf("pgtest: %s: promote: %w", n.name, err)
	}
	if !promoted {
		return fmt.Errorf("pgtest: %s: promote: not promoted within %ds\n%s", n.name, wait, n.LogTail(20))
	}
	// pg_promote(wait => true) returns once recovery ended; check anyway,
	// since callers rely on the node accepting writes when Promote returns.
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("pgtest: %s: promote: %w", n.name, err)
	}
	if inRecovery {
		return fmt.Errorf("pgtest: %s: promote: still in recovery", n.name)
	}
	return nil
}

// LogTail returns the last lines of the server's log, for error messages.
func (n *Node) LogTail(lines int) string {
	b, err := os.ReadFile(n.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if lines >= 0 && len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func (n *Node) logPath() string { return filepath.Join(n.dir, "postgres.log") }

// currentLSN returns pg_current_wal_lsn() as text.
func (n *Node) currentLSN(ctx context.Context) (string, error) {
	conn, err := n.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lsn string
	err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	return lsn, err
}

// waitReplay waits until the node has replayed WAL up to lsn. A node that
// is no longer in recovery (promoted) has nothing to wait for.
func (n *Node) waitReplay(ctx context.Context, lsn string) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var lastErr error
	for {
		if conn == nil {
			conn, lastErr = n.connect(ctx)
		}
		if conn != nil {
			var inRecovery, done bool
			lastErr = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
				coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&inRecovery, &done)
			if lastErr == nil && (!inRecovery || done) {
				return nil
			}
			if lastErr != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: %s: waiting for replay of %s: %w (last error: %v)", n.name, lsn, ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}

// running reports whether the node has a live postmaster.
func (n *Node) running() bool { return n.PID() != 0 }

// shutdown stops the node for good (fast shutdown, SIGKILL after grace)
// and removes its directory.
func (n *Node) shutdown(grace time.Duration, logf func(string, ...any)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var errs []error
	if err := n.stopLocked(ctx); errors.Is(err, context.DeadlineExceeded) {
		// A slow shutdown that needed SIGKILL is not worth failing a test.
		logf("%v", err)
	} else if err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(n.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: %s: remove directory: %w", n.name, err))
	}
	return errors.Join(errs...)
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultWait)
}
