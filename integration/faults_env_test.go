package integration

// Helpers of the fault-injection tests (faults_*_test.go): real PostgreSQL
// servers, a real executor (in-process or as its own process), toxiproxy
// links in between, and checks that classify every outcome.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// faultSoak reports whether the long variants run (FLYPG_SOAK=1): they
// multiply the number of fault cycles and are too slow for CI under -race.
func faultSoak() bool { return os.Getenv("FLYPG_SOAK") == "1" }

// faultWrite is the row every fault test writes. Key is chosen by the
// client and unique per write, but the table deliberately has no unique
// constraint on it: a write applied twice shows up as two rows.
type faultWrite struct {
	ID   uint64
	Key  string `gorm:"not null;index"`
	Note string
}

// faultConfig configures a faultEnv.
type faultConfig struct {
	cluster      *pgtest.Cluster // default: the shared cluster
	link         bool            // put a pgtest.Link between the replica-region app and the executor
	rpcTimeout   time.Duration   // replica plugin's RPCTimeout; default 5s
	awaitTimeout time.Duration   // replica plugin's AwaitTimeout; default 10s
	executor     flypg.ExecutorConfig
	// dsnParams are added to the executor's connection string, e.g.
	// "pool_max_conns=32".
	dsnParams string
	// plugin, if set, adjusts the replica-region app's configuration.
	plugin func(*flypg.Config)
}

// faultEnv is a two-region deployment on a fresh database: a
// primary-region app serving the executor on a loopback address, a
// replica-region app forwarding to it (through a Link when asked), and
// plain GORM on the primary to check what really committed.
type faultEnv struct {
	t       *testing.T // reports the checks
	root    *testing.T // owns the resources (the test that made e)
	cfg     faultConfig
	cluster *pgtest.Cluster
	dbname  string
	appName string // application_name of the executor's primary connections

	execAddr string       // the executor's own address
	link     *pgtest.Link // nil without cfg.link
	target   string       // what the replica plugin dials: link or executor

	x *faultExecutor // the current executor, shared by every view of e

	replica *gorm.DB
	rPlug   *flypg.Plugin
	plain   *gorm.DB
}

// faultExecutor is the primary-region app that serves the executor.
type faultExecutor struct {
	mu      sync.Mutex
	pPlug   *flypg.Plugin
	served  chan error
	stopped bool
}

// at returns a view of e whose checks report to t (a subtest).
func (e *faultEnv) at(t *testing.T) *faultEnv {
	v := *e
	v.t = t
	return &v
}

// reopenPlain replaces the handle on the primary, whose pooled connections
// died with a primary restart.
func (e *faultEnv) reopenPlain() {
	e.plain = openGORM(e.root, e.cluster.Primary.DSN(e.dbname))
}

func newFaultEnv(t *testing.T, cfg faultConfig) *faultEnv {
	t.Helper()
	c := clusterOr(t, cfg.cluster)
	if cfg.rpcTimeout == 0 {
		cfg.rpcTimeout = 5 * time.Second
	}
	if cfg.awaitTimeout == 0 {
		cfg.awaitTimeout = 10 * time.Second
	}
	if cfg.executor.HealthInterval == 0 {
		cfg.executor.HealthInterval = 100 * time.Millisecond
	}
	e := &faultEnv{t: t, root: t, cfg: cfg, cluster: c, x: &faultExecutor{}}
	e.dbname = createDatabase(t, c, "f_"+strings.ToLower(safeName(t.Name())))
	e.appName = "flypgx_" + e.dbname

	lis := testkit.Listen(t)
	e.execAddr = lis.Addr().String()
	e.serveOn(lis)
	t.Cleanup(e.stopExecutor)
	e.target = e.execAddr
	if cfg.link {
		e.link = pgtest.NewLinkT(t, "app-executor", e.execAddr)
		e.target = e.link.Addr()
	}

	e.replica, e.rPlug = e.replicaApp(e.target)
	e.plain = openGORM(t, c.Primary.DSN(e.dbname))
	local := e.plain.Session(&gorm.Session{Context: fly.Local(context.Background())})
	if err := local.AutoMigrate(&faultWrite{}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e.waitReplicated()
	return e
}

// executorDSN is the connection string of the executor: the primary, with
// an application_name that tells its connections apart in
// pg_stat_activity.
func (e *faultEnv) executorDSN() string {
	dsn := e.cluster.Primary.DSN(e.dbname) + "&application_name=" + e.appName
	if e.cfg.dsnParams != "" {
		dsn += "&" + e.cfg.dsnParams
	}
	return dsn
}

// serveOn starts a primary-region app whose executor serves on lis.
func (e *faultEnv) serveOn(lis net.Listener) {
	t := e.t
	db := openGORM(e.root, e.cluster.Primary.DSN(e.dbname))
	p := flypg.New(flypg.Config{
		Region: primaryRegion, PrimaryRegion: primaryRegion, Secret: testkit.Secret,
		PrimaryDSN: e.executorDSN(), Executor: e.cfg.executor,
	})
	if err := db.Use(p); err != nil {
		lis.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(lis) }()
	e.x.mu.Lock()
	e.x.pPlug, e.x.served, e.x.stopped = p, served, false
	e.x.mu.Unlock()
}

// stopExecutor stops the executor for real: its plugin closes, its
// server stops and its port is free.
func (e *faultEnv) stopExecutor() {
	e.x.mu.Lock()
	p, served, stopped := e.x.pPlug, e.x.served, e.x.stopped
	e.x.stopped = true
	e.x.mu.Unlock()
	if stopped {
		return
	}
	p.Close()
	if err := <-served; err != nil {
		e.t.Errorf("Serve: %v", err)
	}
}

// restartExecutor starts a new executor (a new instance, with an empty
// ledger) on the old address.
func (e *faultEnv) restartExecutor() {
	e.t.Helper()
	e.stopExecutor()
	var lis net.Listener
	var err error
	testkit.Eventually(e.t, 10*time.Second, func() bool {
		lis, err = net.Listen("tcp", e.execAddr)
		return err == nil
	}, "the executor's port to be free again")
	e.serveOn(lis)
}

// replicaApp opens a replica-region app on the local replica whose
// executor is target; mods adjust its configuration after cfg.plugin.
func (e *faultEnv) replicaApp(target string, mods ...func(*flypg.Config)) (*gorm.DB, *flypg.Plugin) {
	t := e.t
	db := openGORM(e.root, e.cluster.Replicas[0].DSN(e.dbname))
	cfg := flypg.Config{
		Region: replicaRegion, PrimaryRegion: primaryRegion,
		PrimaryAddr: target, Secret: testkit.Secret,
		AwaitTimeout: e.cfg.awaitTimeout, RPCTimeout: e.cfg.rpcTimeout,
	}
	if e.cfg.plugin != nil {
		e.cfg.plugin(&cfg)
	}
	for _, m := range mods {
		m(&cfg)
	}
	p := flypg.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	e.root.Cleanup(func() { p.Close() })
	return db, p
}

func (e *faultEnv) waitReplicated() {
	e.t.Helper()
	waitReplicated(e.t, e.cluster)
}

// onPrimary counts the rows with key on the primary.
func (e *faultEnv) onPrimary(key string) int64 {
	e.t.Helper()
	return countRows(e.t, e.plain, "fault_writes", "key = ?", key)
}

// onPrimaryLike counts the rows whose key matches pattern on the primary.
func (e *faultEnv) onPrimaryLike(pattern string) int64 {
	e.t.Helper()
	return countRows(e.t, e.plain, "fault_writes", "key LIKE ?", pattern)
}

// write creates one faultWrite through the replica-region app.
func (e *faultEnv) write(ctx context.Context, key string) error {
	return e.replica.WithContext(ctx).Create(&faultWrite{Key: key}).Error
}

// mustWrite writes key and fails the test unless it succeeds and is read
// back on the replica (read-your-writes).
func (e *faultEnv) mustWrite(key string) {
	e.t.Helper()
	if err := e.write(context.Background(), key); err != nil {
		e.t.Fatalf("write %s: %v", key, err)
	}
	if n := countRows(e.t, e.replica, "fault_writes", "key = ?", key); n != 1 {
		e.t.Fatalf("write %s: the replica shows %d rows right after it, want 1", key, n)
	}
}

// activeOnPrimary counts this test's executor connections on the primary
// whose state matches state (a LIKE pattern) and, if query is set, whose
// query contains it.
func (e *faultEnv) activeOnPrimary(state, query string) int64 {
	e.t.Helper()
	return faultActivity(e.t, e.plain, e.appName, state, query)
}

// faultActivity counts backends of application appName in pg_stat_activity
// whose state matches state (LIKE) and whose query contains query.
func faultActivity(t testing.TB, db *gorm.DB, appName, state, query string) int64 {
	t.Helper()
	var n int64
	ok(t, db.Raw(`SELECT count(*) FROM pg_stat_activity
		WHERE application_name = ? AND state LIKE ? AND position(? in query) > 0`, appName, state, query).Scan(&n))
	return n
}

// sleepingOnPrimary counts this test's executor connections that are inside
// pg_sleep (wait event PgSleep) in a query containing query: the statement
// was sent whole and is executing, not being prepared.
func (e *faultEnv) sleepingOnPrimary(query string) int64 {
	e.t.Helper()
	return faultSleeping(e.t, e.plain, e.appName, query)
}

func faultSleeping(t testing.TB, db *gorm.DB, appName, query string) int64 {
	t.Helper()
	var n int64
	ok(t, db.Raw(`SELECT count(*) FROM pg_stat_activity
		WHERE application_name = ? AND state = 'active' AND wait_event = 'PgSleep' AND position(? in query) > 0`, appName, query).Scan(&n))
	return n
}

// healthy checks that the executor at addr reports SERVING on the standard
// health service and that a normal write through the replica-region app
// succeeds right after: at once, or, when the app's connection was broken
// and is still being made again (a TLS connection takes one round trip
// more than the write), after failures that all said nothing was sent.
func (e *faultEnv) healthy(what string) {
	e.t.Helper()
	faultServing(e.t, e.execAddr)
	key := fmt.Sprintf("healthy-%s-%d", safeName(what), time.Now().UnixNano())
	var err error
	// The client's reconnection has no event to wait on: try the write.
	if !testkit.Poll(10*time.Second, func() bool {
		err = e.write(context.Background(), key)
		switch {
		case err == nil:
			return true
		case !errors.Is(err, forward.ErrUnavailable):
			e.t.Fatalf("write %s: %v", key, err)
		case e.onPrimary(key) != 0:
			e.t.Fatalf("write %s failed as not sent, yet it is on the primary", key)
		}
		return false
	}) {
		e.t.Fatalf("write %s: %v", key, err)
	}
	if n := countRows(e.t, e.replica, "fault_writes", "key = ?", key); n != 1 {
		e.t.Fatalf("write %s: the replica shows %d rows right after it, want 1", key, n)
	}
}

// faultServing waits (briefly) for the health service at addr to say
// SERVING for the executor service.
func faultServing(t testing.TB, addr string) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(secretCredentials(t, testkit.Secret)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	h := healthpb.NewHealthClient(cc)
	var last string
	if !testkit.Poll(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: forwardpb.Executor_ServiceDesc.ServiceName})
		if err != nil {
			last = err.Error()
			return false
		}
		last = r.GetStatus().String()
		return r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}) {
		t.Fatalf("the executor's health is not SERVING after 10s; last: %s", last)
	}
}

// outcome classifies what a forwarded write returned, for the checks of
// the fault tests: what the client was told about whether it committed.
type outcome int

const (
	outcomeOK           outcome = iota // committed and replayed
	outcomeCommitted                   // committed, with a replication or size error
	outcomeNotCommitted                // the error says nothing committed
	outcomeInDoubt                     // the error says it may have committed
	outcomeUntyped                     // an error the client cannot act on
)

func (o outcome) String() string {
	return [...]string{"ok", "committed", "not committed", "in doubt", "untyped"}[o]
}

// classifyWrite says what err tells the caller about the write.
func classifyWrite(err error) outcome {
	if err == nil {
		return outcomeOK
	}
	var re *flypg.ReplicationError
	var ce *forward.CommittedError
	if errors.As(err, &re) || errors.As(err, &ce) {
		return outcomeCommitted
	}
	if errors.Is(err, forward.ErrInDoubt) {
		return outcomeInDoubt
	}
	for _, kind := range []error{forward.ErrUnavailable, forward.ErrTxAborted, forward.ErrBusy, forward.ErrTooLarge, forward.ErrUnauthenticated, forward.ErrProtocol, forward.ErrNotPrimary} {
		if errors.Is(err, kind) {
			return outcomeNotCommitted
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return outcomeNotCommitted
	}
	return outcomeUntyped
}

// resolveOutcome asks the executor at addr what became of the forwarded
// unit that err reports (by its request ID).
func resolveOutcome(t testing.TB, addr string, err error) (forward.Outcome, string) {
	t.Helper()
	var fe *forward.Error
	if !errors.As(err, &fe) || fe.RequestID == "" {
		return forward.OutcomeUnknown, ""
	}
	c, cerr := forward.NewClient(forward.ClientConfig{Target: addr, Secret: testkit.Secret, Timeout: 5 * time.Second})
	if cerr != nil {
		t.Fatal(cerr)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _, rerr := c.Resolve(ctx, fe.RequestID)
	if rerr != nil {
		t.Fatalf("Resolve %s: %v", fe.RequestID, rerr)
	}
	return out, fe.RequestID
}

// goroutineWatch samples runtime.NumGoroutine until stopped and reports
// the highest count seen.
type goroutineWatch struct {
	stop chan struct{}
	done chan int
}

func watchGoroutines() *goroutineWatch {
	w := &goroutineWatch{stop: make(chan struct{}), done: make(chan int, 1)}
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		peak := runtime.NumGoroutine()
		for {
			select {
			case <-w.stop:
				w.done <- peak
				return
			case <-tick.C:
				peak = max(peak, runtime.NumGoroutine())
			}
		}
	}()
	return w
}

// Peak stops the watch and returns the highest goroutine count it saw.
func (w *goroutineWatch) Peak() int {
	close(w.stop)
	return <-w.done
}

// heapInUse returns the bytes of heap and goroutine stacks in use after a
// collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// faultLeakOptions are the goleak options of the load tests: everything
// that ran before the test (the shared cluster, paused parallel tests), and
// the GORM leak env_test.go already ignores.
func faultLeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"),
	}
}

// executorProcess is cmd/flypg-executor running as a process of its own.
type executorProcess struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}

	mu  sync.Mutex
	log strings.Builder
}

// buildExecutor builds cmd/flypg-executor into a temporary directory of t.
func buildExecutor(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "flypg-executor")
	cmd := exec.Command(gobin, "build", "-o", bin, "github.com/flypg/flypg/cmd/flypg-executor")
	cmd.Dir = ".." // the module's root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/flypg-executor: %v\n%s", err, out)
	}
	return bin
}

var servingAddrRE = regexp.MustCompile(`serving"? addr=(\S+)`)

// startExecutorProcess runs the executor binary against dsn, listening on
// listen ("127.0.0.1:0" for any port), and returns once it serves.
func startExecutorProcess(t *testing.T, bin, dsn, listen string) *executorProcess {
	t.Helper()
	return startExecutorProcessEnv(t, bin, listen, "FLYPG_PRIMARY_DSN="+dsn, "FLYPG_SECRET="+testkit.Secret)
}

// startExecutorProcessEnv runs the executor binary with env added to the
// environment, listening on listen.
func startExecutorProcessEnv(t *testing.T, bin, listen string, env ...string) *executorProcess {
	t.Helper()
	cmd := exec.Command(bin, "-listen", listen)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &executorProcess{cmd: cmd, exited: make(chan struct{})}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := servingAddrRE.FindStringSubmatch(line); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addrCh:
	case <-p.exited:
		t.Fatalf("flypg-executor exited before serving:\n%s", p.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("flypg-executor did not serve within 30s:\n%s", p.Log())
	}
	return p
}

// Kill SIGKILLs the process and waits until it is gone.
func (p *executorProcess) Kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill flypg-executor: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("flypg-executor still running 10s after SIGKILL")
	}
}

// Log returns what the process wrote to stderr.
func (p *executorProcess) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}
