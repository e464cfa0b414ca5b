package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// closeGrace is how long Close lets a node's fast shutdown run before it
// kills the node.
const closeGrace = 5 * time.Second

// Options configures Start.
type Options struct {
	// Replicas is the number of streaming hot-standby replicas to start;
	// 0 starts a primary only.
	Replicas int
	// ReplicationLinks routes each replica's replication connection
	// through its own Link (see Cluster.ReplicationLink), so that tests can
	// add latency to replication or break it.
	ReplicationLinks bool
	// Settings are extra postgresql.conf settings for every node; they
	// override pgtest's defaults. Values are written quoted, e.g.
	// {"log_statement": "all"}. The port and unix_socket_directories are
	// per node and cannot be set here.
	Settings map[string]string
	// WALSegmentSizeMB is the cluster's WAL segment size in MiB (initdb
	// --wal-segsize: a power of two from 1 to 1024); 0 means PostgreSQL's
	// default of 16.
	WALSegmentSizeMB int
	// BinDir is the directory of the PostgreSQL server binaries; empty
	// means FindBinDir.
	BinDir string
	// Logf, if set, receives progress messages such as the start-up time.
	Logf func(format string, args ...any)
}

// Cluster is a running primary with its replicas. Close it when done.
type Cluster struct {
	// Primary is the node the replicas stream from. It does not change when
	// a replica is promoted by Node.Promote; Failover changes it.
	Primary *Node
	// Replicas are the streaming replicas, named replica1, replica2...
	Replicas []*Node

	links   []*Link // links[i] carries Replicas[i]'s replication; nil without ReplicationLinks
	retired []*Node // former primaries (Failover), stopped
	logf    func(format string, args ...any)

	closeOnce sync.Once
	closeErr  error
}

// Start creates and starts a cluster: initdb, the primary, then each
// replica from pg_basebackup. It returns once every replica streams and
// has replayed the primary's current WAL position. On error nothing is left
// behind. Without a deadline in ctx it waits at most a minute.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	begin := time.Now()
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("pgtest: negative number of replicas: %d", opts.Replicas)
	}
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinDir(binDir); err != nil {
		return nil, err
	}
	run, err := newRunner(binDir)
	if err != nil {
		return nil, err
	}

	c := &Cluster{logf: opts.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	for _, dir := range removeStale(os.TempDir(), time.Now()) {
		c.logf("pgtest: removed %s, left by a process that died", dir)
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Close()
		}
	}()

	if err := c.startPrimary(ctx, run, mergeSettings(defaultSettings(opts.Replicas), opts.Settings), opts.WALSegmentSizeMB); err != nil {
		return nil, err
	}
	c.logf("pgtest: primary up on %s after %s", c.Primary.Addr(), time.Since(begin).Round(time.Millisecond))
	if err := c.startReplicas(ctx, run, opts); err != nil {
		return nil, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return nil, err
	}
	ok = true
	c.logf("pgtest: primary + %d replica(s) ready in %s", len(c.Replicas), time.Since(begin).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) startPrimary(ctx context.Context, run *runner, settings map[string]string, walSegMB int) error {
	p, err := newNode(run, "primary")
	if err != nil {
		return err
	}
	c.Primary = p
	if err := initPrimary(ctx, run, p, settings, walSegMB); err != nil {
		return err
	}
	return p.startFirst(ctx)
}

// initPrimary creates the primary's data directory and configuration.
func initPrimary(ctx context.Context, run *runner, p *Node, settings map[string]string, walSegMB int) error {
	// --no-sync: nobody needs the files on disk before the server starts;
	// -A trust and the C locale keep initdb quick and deterministic.
	args := []string{"-D", p.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"}
	if walSegMB != 0 {
		args = append(args, "--wal-segsize="+strconv.Itoa(walSegMB))
	}
	if err := run.run(ctx, p.dir, "initdb", args...); err != nil {
		return fmt.Errorf("pgtest: initdb: %w", err)
	}
	if err := appendConfig(p.dataDir, settings); err != nil {
		return fmt.Errorf("pgtest: primary: write postgresql.conf: %w", err)
	}
	if err := writeHBA(p.dataDir); err != nil {
		return fmt.Errorf("pgtest: primary: write pg_hba.conf: %w", err)
	}
	return nil
}

// startReplicas creates the replicas' nodes and links one by one, so that
// Close finds them on error, and then copies and starts them in parallel.
func (c *Cluster) startReplicas(ctx context.Context, run *runner, opts Options) error {
	for i := range opts.Replicas {
		r, err := newNode(run, "replica"+strconv.Itoa(i+1))
		if err != nil {
			return err
		}
		c.Replicas = append(c.Replicas, r)
		if opts.ReplicationLinks {
			l, err := NewLink(r.name+"-replication", c.Primary.Addr())
			if err != nil {
				return err
			}
			c.links = append(c.links, l)
		}
	}
	errs := make([]error, len(c.Replicas))
	var wg sync.WaitGroup
	for i, r := range c.Replicas {
		wg.Go(func() { errs[i] = c.startReplica(ctx, run, i, r) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) startReplica(ctx context.Context, run *runner, i int, r *Node) error {
	p := c.Primary
	// The copy comes straight from the primary, not through the link: it
	// is set-up, not replication under test. -R writes standby.signal and
	// primary_conninfo; a fast checkpoint avoids waiting for a spread one.
	// -X fetch is as fast as -X stream here and, unlike it, does not fork a
	// WAL streamer that would outlive pg_basebackup if ctx killed it.
	if err := run.run(ctx, r.dir, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port()),
		"-U", "postgres", "-D", r.dataDir, "-R", "--checkpoint=fast", "-X", "fetch", "--no-sync"); err != nil {
		return fmt.Errorf("pgtest: %s: pg_basebackup: %w", r.name, err)
	}
	port := p.Port()
	if l := c.ReplicationLink(i); l != nil {
		port = l.port()
	}
	if err := setPrimaryConninfo(r.dataDir, "127.0.0.1", port, r.name); err != nil {
		return fmt.Errorf("pgtest: %s: write primary_conninfo: %w", r.name, err)
	}
	return r.startFirst(ctx)
}

// ReplicationLink returns the Link that carries replica i's replication
// connection (i indexes Replicas), or nil without Options.ReplicationLinks.
func (c *Cluster) ReplicationLink(i int) *Link {
	if i < 0 || i >= len(c.links) {
		return nil
	}
	return c.links[i]
}

// WaitReplicated waits until every running replica has replayed the WAL
// up to the primary's pg_current_wal_lsn() at the time of the call, so
// that everything committed on the primary before is visible on the
// replicas. Stopped and promoted replicas are skipped. Without a deadline
// in ctx it waits at most a minute.
func (c *Cluster) WaitReplicated(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	lsn, err := c.Primary.currentLSN(ctx)
	if err != nil {
		return fmt.Errorf("pgtest: primary: pg_current_wal_lsn: %w", err)
	}
	for _, r := range c.Replicas {
		if !r.running() {
			continue
		}
		if err := r.waitReplay(ctx, lsn); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the replicas, then the primary (fast shutdown, SIGKILL after
// a few seconds), closes the links and removes every directory. It is
// idempotent and returns the first call's result.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Cluster) close() error {
	begin := time.Now()
	// Replicas go first because a primary's shutdown waits for its WAL
	// senders to ship the final WAL to connected replicas.
	errs := make([]error, len(c.Replicas)+1)
	var wg sync.WaitGroup
	for i, r := range c.Replicas {
		wg.Go(func() { errs[i] = r.shutdown(closeGrace, c.logf) })
	}
	wg.Wait()
	// Links next, so that a black-holed replica cannot hold up the
	// primary's shutdown either.
	for _, l := range c.links {
		errs = append(errs, l.Close())
	}
	if c.Primary != nil {
		errs[len(c.Replicas)] = c.Primary.shutdown(closeGrace, c.logf)
	}
	for _, n := range c.retired {
		errs = append(errs, n.shutdown(closeGrace, c.logf))
	}
	c.logf("pgtest: cluster closed in %s", time.Since(begin).Round(time.Millisecond))
	return errors.Join(errs...)
}
