package integration

// Exactly-once of calls across executor instances and lost COMMIT replies,
// the database identity check, and the commit LSN rule of calls.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// Ledger is the table the calls of these tests write to.
type Ledger struct {
	ID   uint
	Note string
}

// insertNote is a registered function that writes one row.
func insertNote(ctx context.Context, tx *gorm.DB, note string) (string, error) {
	return note, tx.Create(&Ledger{Note: note}).Error
}

// servePrimaryPlugin starts a primary-region plugin on dsn with cfg's
// executor settings, its node's gRPC services on its own loopback server
// (unauthenticated: the tests speak the protocol themselves).
func servePrimaryPlugin(t *testing.T, dsn string, xc flypg.ExecutorConfig) (*flypg.Plugin, string) {
	t.Helper()
	db := openGORM(t, dsn)
	p := flypg.New(flypg.Config{Region: primaryRegion, PrimaryRegion: primaryRegion, Insecure: true, Executor: xc})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if _, err := flypg.Register(p, "note", insertNote); err != nil {
		t.Fatal(err)
	}
	opts, err := p.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	if err := p.RegisterGRPC(s); err != nil {
		t.Fatal(err)
	}
	return p, testkit.ServeGRPC(t, s)
}

func protocolClient(t *testing.T, addr string) forwardpb.ExecutorClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return forwardpb.NewExecutorClient(cc)
}

// TestCallRunsOnceAcrossInstances: under durable deduplication, a Call
// whose first attempt committed on one executor instance and whose retry
// reaches another is not run again: the retry is told it committed.
func TestCallRunsOnceAcrossInstances(t *testing.T) {
	c := requireCluster(t)
	name := createDatabase(t, c, "callonce")
	dsn := c.Primary.DSN(name)
	noErr(t, openGORM(t, dsn).AutoMigrate(&Ledger{}))
	xc := flypg.ExecutorConfig{DurableDedup: true}
	_, addrA := servePrimaryPlugin(t, dsn, xc)
	_, addrB := servePrimaryPlugin(t, dsn, xc)
	a, b := protocolClient(t, addrA), protocolClient(t, addrB)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "flypg-protocol", protocol.Version)
	id := []byte("0123456789abcdef")
	req := func(attempt uint32, inst string) *forwardpb.CallRequest {
		return &forwardpb.CallRequest{Unit: &forwardpb.Unit{RequestId: id, Attempt: attempt, Instance: inst}, Name: "note", Payload: []byte(`"once"`)}
	}
	first, err := a.Call(ctx, req(1, ""))
	if err != nil || first.GetError() != nil {
		t.Fatalf("first attempt: %v %v", err, first.GetError())
	}
	var md metadata.MD
	_, err = b.Call(ctx, req(2, first.GetInstance()), grpc.Trailer(&md))
	if status.Code(err) != codes.AlreadyExists || md.Get("flypg-outcome")[0] != "committed" {
		t.Fatalf("retry on another instance: %v %v, want committed earlier", err, md)
	}
	plain := openGORM(t, dsn)
	if n := countRows(t, plain, "ledgers", "note = ?", "once"); n != 1 {
		t.Fatalf("%d rows for one call", n)
	}
}

// TestCallWhoseCommitReplyIsLostIsInDoubt: a registered function whose
// COMMIT reached the primary but whose connection broke before the answer
// came back is not reported as failed ("did not commit", safe to run
// again): it is in doubt; under durable deduplication the retry settles it
// from the table, as committed.
func TestCallWhoseCommitReplyIsLostIsInDoubt(t *testing.T) {
	c := requireCluster(t)
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			name := createDatabase(t, c, "calllost")
			plain := openGORM(t, c.Primary.DSN(name))
			noErr(t, plain.AutoMigrate(&Ledger{}))
			link := pgtest.NewLinkT(t, "app-primary", c.Primary.Addr())
			dsn := strings.Replace(c.Primary.DSN(name), c.Primary.Addr(), link.Addr(), 1)
			p, addr := servePrimaryPlugin(t, dsn, flypg.ExecutorConfig{DurableDedup: durable})
			_ = p
			client, err := forward.NewClient(forward.ClientConfig{Target: addr, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { client.Close() })
			if err := link.SetRTT(200 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
			lost := make(chan error, 1)
			go func() {
				lost <- func() error {
					var err error
					if !testkit.Poll(10*time.Second, func() bool {
						var n int64
						err = plain.Table("ledgers").Where("note = ?", "lost").Count(&n).Error
						return err != nil || n > 0
					}) {
						return errors.New("the call never committed")
					}
					if err != nil {
						return err
					}
					// The COMMIT's answer is on its way back: lose it.
					if err := link.ResetPeer(); err != nil {
						return err
					}
					time.Sleep(100 * time.Millisecond)
					return link.Clear()
				}()
			}()
			_, _, err = client.Call(context.Background(), "note", []byte(`"lost"`))
			if lerr := <-lost; lerr != nil {
				t.Fatal(lerr)
			}
			var ce *forward.CallError
			var committed *forward.CommittedError
			switch {
			case errors.As(err, &ce):
				t.Fatalf("a call whose COMMIT reply was lost reported as failed: %v", err)
			case durable && !errors.As(err, &committed) && err != nil:
				t.Fatalf("under durable deduplication: %v, want it settled as committed", err)
			case !durable && !errors.Is(err, forward.ErrInDoubt):
				t.Fatalf("%v, want ErrInDoubt", err)
			}
			if n := countRows(t, plain, "ledgers", "note = ?", "lost"); n != 1 {
				t.Fatalf("%d rows for one call", n)
			}
		})
	}
}

// TestDatabaseMismatchIsRefused: a replica-region app whose replica is on
// one database, pointed at an executor serving another, gets a clear error
// naming both, and nothing is written.
func TestDatabaseMismatchIsRefused(t *testing.T) {
	c := requireCluster(t)
	serving := createDatabase(t, c, "serving")
	other := createDatabase(t, c, "otherdb")
	for _, n := range []string{serving, other} {
		noErr(t, openGORM(t, c.Primary.DSN(n)).AutoMigrate(&Ledger{}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	_, addr := servePrimaryPlugin(t, c.Primary.DSN(serving), flypg.ExecutorConfig{})
	app := openGORM(t, c.Replicas[0].DSN(other))
	p := flypg.New(flypg.Config{Region: replicaRegion, PrimaryRegion: primaryRegion, PrimaryAddr: addr, Insecure: true, AwaitTimeout: 2 * time.Second})
	if err := app.Use(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	for what, err := range map[string]error{
		"create": app.Create(&Ledger{Note: "lost"}).Error,
		"call": func() error {
			_, err := flypg.Declare[string, string]("note").Call(context.Background(), app, "lost")
			return err
		}(),
	} {
		if !errors.Is(err, flypg.ErrDatabaseMismatch) {
			t.Fatalf("%s on an executor serving another database: %v, want ErrDatabaseMismatch", what, err)
		}
		if !strings.Contains(err.Error(), serving) || !strings.Contains(err.Error(), other) {
			t.Fatalf("%s: %v: the error should name both databases", what, err)
		}
	}
	for _, n := range []string{serving, other} {
		if got := countRows(t, openGORM(t, c.Primary.DSN(n)), "ledgers", ""); got != 0 {
			t.Fatalf("%d rows written to %s", got, n)
		}
	}
}

// TestReplicaRegionOnAPrimaryIsRefusedAtUse: a replica-region node whose
// local database is not a replica is told so by db.Use, not at its first
// write.
func TestReplicaRegionOnAPrimaryIsRefusedAtUse(t *testing.T) {
	c := requireCluster(t)
	db := openGORM(t, c.Primary.DSN(""))
	p := flypg.New(flypg.Config{Region: replicaRegion, PrimaryRegion: primaryRegion, PrimaryAddr: "127.0.0.1:1", Insecure: true})
	defer p.Close()
	err := db.Use(p)
	if err == nil || !strings.Contains(err.Error(), "not a replica") {
		t.Fatalf("db.Use on a primary in a replica region: %v, want it refused", err)
	}
}

// TestCallLSNUsesTheServersSegmentSize: on a cluster with 1 MiB WAL
// segments, a call whose commit leaves the insert position right after a
// segment's first page header reports the segment's start, which the
// replica reaches; the 16 MiB rule would make the caller wait for a
// position the replica does not report until unrelated WAL arrives.
func TestCallLSNUsesTheServersSegmentSize(t *testing.T) {
	c := ownCluster(t, pgtest.Options{Replicas: 1, WALSegmentSizeMB: 1})
	primary := openGORM(t, c.Primary.DSN(""))
	pp := flypg.New(flypg.Config{Region: primaryRegion, PrimaryRegion: primaryRegion, Insecure: true})
	if err := primary.Use(pp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pp.Close() })
	switchWAL, err := flypg.Register(pp, "switch", func(ctx context.Context, tx *gorm.DB, _ struct{}) (bool, error) {
		return true, tx.Exec(`SELECT pg_switch_wal()`).Error
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := testkit.Serve(t, pp)
	var seen []flypg.WriteEvent
	app := openGORM(t, c.Replicas[0].DSN(""))
	rp := flypg.New(flypg.Config{Region: replicaRegion, PrimaryRegion: primaryRegion, PrimaryAddr: addr, Insecure: true,
		AwaitTimeout: time.Second, OnWrite: func(_ context.Context, ev flypg.WriteEvent) { seen = append(seen, ev) }})
	if err := app.Use(rp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	// The next segment must not start on a 16 MiB boundary, where both
	// rules agree.
	for {
		var next int64
		ok(t, primary.Raw(`SELECT div(pg_current_wal_insert_lsn() - '0/0', 1048576)::bigint + 1`).Scan(&next))
		if next%16 != 0 {
			break
		}
		ok(t, primary.Exec(`CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1); SELECT pg_switch_wal()`))
	}
	if _, err := switchWAL.Call(context.Background(), app, struct{}{}); err != nil {
		t.Fatalf("call: %v", err)
	}
	if len(seen) != 1 || seen[0].LSN%(1<<20) != 0 {
		t.Fatalf("the call's commit LSN is %v, want the start of a 1 MiB segment (events %+v)", seen[0].LSN, seen)
	}
}
