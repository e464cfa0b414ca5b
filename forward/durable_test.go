package forward_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// secondExecutor starts another executor on the same primary, as a restart
// of the first or a second instance behind the same dns:/// name.
func (e *env) secondExecutor(t *testing.T, cfg executor.Config) (forwardpb.ExecutorClient, string) {
	t.Helper()
	_, addr := serveExecutor(t, cfg)
	return rawClient(t, addr, testkit.Secret), addr
}

func TestDurableDedup(t *testing.T) {
	durable := func(x *executor.Config, _ *forward.ClientConfig) { x.DurableDedup = true }
	e := startEnv(t, durable)
	ctx := protoCtx()
	a := rawClient(t, e.addr, testkit.Secret)
	b, _ := e.secondExecutor(t, executor.Config{DSN: e.cluster.Primary.DSN(""), Secret: testkit.Secret, DurableDedup: true})

	// A retry that reaches another instance after the first attempt
	// committed: the executor cannot answer from memory, but the table
	// refuses to apply it twice and says it committed.
	// With and without a result: the statement the refused ID skips must
	// not upset the rest of the pipeline.
	var id []byte
	var first *forwardpb.ExecResponse
	for _, sql := range []string{`INSERT INTO items (name) VALUES ($1) RETURNING id`, `INSERT INTO items (name) VALUES ($1)`} {
		name := "once-" + fmt.Sprint(len(sql))
		req := func(attempt uint32, instance string) *forwardpb.ExecRequest {
			r := insertReq(id, attempt, instance, name)
			r.Statement.Sql = sql
			return r
		}
		id = id16()
		var err error
		first, err = a.Exec(ctx, req(1, ""))
		if err != nil || first.GetError() != nil {
			t.Fatalf("first attempt: %v %v", err, first.GetError())
		}
		var md metadata.MD
		_, err = b.Exec(ctx, req(2, first.GetInstance()), grpc.Trailer(&md))
		if status.Code(err) != codes.AlreadyExists || first1(md, "flypg-outcome") != "committed" || first1(md, "flypg-commit-lsn") == "" {
			t.Fatalf("%s: retry on another instance: %v %v, want committed earlier with an LSN", sql, err, md)
		}
		if n := e.count(t, "name = $1", name); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
	}

	// A retry on another instance of a unit whose first attempt never
	// arrived: it runs, once.
	resp, err := b.Exec(ctx, insertReq(id16(), 2, first.GetInstance(), "never-arrived"))
	if err != nil || resp.GetError() != nil || e.count(t, "name = 'never-arrived'") != 1 {
		t.Fatalf("retry of a unit never run: %v %v", err, resp.GetError())
	}

	// Resolve on an instance that does not know an ID tombstones it: "not
	// committed" is final, and a late attempt of it does not run.
	late := id16()
	r, err := b.Resolve(ctx, &forwardpb.ResolveRequest{Unit: &forwardpb.Unit{RequestId: late, Attempt: 2, Instance: "gone"}})
	if err != nil || r.GetOutcome() != forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED {
		t.Fatalf("resolve of an unknown ID: %v %v", r.GetOutcome(), err)
	}
	var md metadata.MD
	_, err = a.Exec(ctx, insertReq(late, 1, "", "late"), grpc.Trailer(&md))
	if err == nil || first1(md, "flypg-outcome") != "not-committed" || e.count(t, "name = 'late'") != 0 {
		t.Fatalf("late attempt of a tombstoned ID: %v %v", err, md)
	}
	// And Resolve on another instance tells a committed unit from the table.
	r, err = b.Resolve(ctx, &forwardpb.ResolveRequest{Unit: &forwardpb.Unit{RequestId: id, Attempt: 2}})
	if err != nil || r.GetOutcome() != forwardpb.ResolveResponse_OUTCOME_COMMITTED || r.GetCommitLsn() == 0 {
		t.Fatalf("resolve of a committed ID elsewhere: %v %v", r.GetOutcome(), err)
	}

	// A transaction's ID commits with it.
	tx, err := e.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO items (name) VALUES ('in-tx'), ('in-tx-2')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE items SET qty = 1 WHERE name = 'in-tx'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var ids int
	if err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM flypg_requests WHERE committed`).Scan(&ids); err != nil || ids < 3 {
		t.Fatalf("%d committed IDs recorded (%v), want one per committed unit", ids, err)
	}
	// VACUUM cannot share its transaction with the ID: it still runs.
	if _, err := e.db.Exec(`VACUUM items`); err != nil {
		t.Fatalf("VACUUM under durable deduplication: %v", err)
	}
	// Multi-statement Exec carries its ID too.
	if _, err := e.db.Exec(`INSERT INTO items (name) VALUES ('ms1'); INSERT INTO items (name) VALUES ('ms2')`); err != nil {
		t.Fatal(err)
	}
	if _, err := executor.New(context.Background(), executor.Config{AllowUnauthenticated: true, DurableDedup: true, DedupTable: "bad name"}); err == nil {
		t.Fatal("a table name that is not an identifier was accepted")
	}
}

// TestDurableDedupSettlesBrokenPrimaryConnection breaks the executor's
// primary connection while a statement runs on it, after it was sent:
// the executor cannot know whether it committed. Without durable
// deduplication that is in doubt; with it the client's retry carries the
// same ID, whose row settles it: the write is reported committed (or runs
// then, if the first attempt did not commit), and is there once.
func TestDurableDedupSettlesBrokenPrimaryConnection(t *testing.T) {
	e := startEnv(t)
	for _, tc := range []struct {
		durable bool
		want    string
	}{
		{false, "in doubt"},
		{true, "committed"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			link := pgtest.NewLinkT(t, "executor-primary", e.cluster.Primary.Addr())
			dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", link.Addr())
			_, addr := e.secondExecutor(t, executor.Config{DSN: dsn, Secret: testkit.Secret, DurableDedup: tc.durable})
			_, db := openClient(t, forward.ClientConfig{Target: addr, Secret: testkit.Secret, Timeout: 5 * time.Second})

			name := "broken-" + tc.want
			done := make(chan error, 1)
			go func() {
				// Break the link once the statement is running on the primary.
				var err error
				running := testkit.Poll(5*time.Second, func() bool {
					var n int
					err = e.primary.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%pg_sleep(0.3)%'`).Scan(&n)
					return err != nil || n > 0
				})
				switch {
				case err != nil:
					done <- err
				case !running:
					done <- errors.New("the statement never ran")
				default:
					if err := link.ResetPeer(); err != nil {
						done <- err
						return
					}
					done <- link.Clear()
				}
			}()
			ctx, rcpt := forward.WithReceipt(context.Background())
			_, err := db.ExecContext(ctx, `INSERT INTO items (name) SELECT $1 FROM pg_sleep(0.3)`, name)
			if lerr := <-done; lerr != nil {
				t.Fatal(lerr)
			}
			var ce *forward.CommittedError
			switch {
			case !tc.durable:
				if !errors.Is(err, forward.ErrInDoubt) {
					t.Fatalf("without durable deduplication: %v, want ErrInDoubt", err)
				}
			case err == nil || errors.As(err, &ce):
				if rcpt.RPCs() < 2 {
					t.Fatalf("%d round trips: the connection did not break mid-statement, the test proved nothing", rcpt.RPCs())
				}
			default:
				t.Fatalf("with durable deduplication: %v, want success or a *CommittedError", err)
			}
			// The primary finishes the statement on its own; wait for it
			// to be gone before counting.
			testkit.Eventually(t, 5*time.Second, func() bool {
				var n int
				if err := e.primary.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.3)%' AND state = 'active' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n == 0
			}, "the statement to end on the primary")
			if n := e.count(t, "name = $1", name); n > 1 || (tc.durable && n != 1) {
				t.Fatalf("%d rows, want 1", n)
			}
		})
	}
}

func first1(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
