package forward_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/forward/forwardpb"
)

// secondExecutor starts another executor on the same primary, as a restart
// of the first or a second instance behind the same dns:/// name.
func (e *env) secondExecutor(t *testing.T, cfg forward.ExecutorConfig) (forwardpb.ExecutorClient, *forward.Executor) {
	t.Helper()
	x, err := forward.NewExecutor(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- x.Serve(lis) }()
	t.Cleanup(func() { x.Close(); <-done })
	return rawClient(t, lis.Addr().String(), secret), x
}

func TestDurableDedup(t *testing.T) {
	durable := func(x *forward.ExecutorConfig, _ *forward.ClientConfig) { x.DurableDedup = true }
	e := startEnv(t, durable)
	ctx := protoCtx()
	a := rawClient(t, e.addr, secret)
	b, _ := e.secondExecutor(t, forward.ExecutorConfig{DSN: e.cluster.Primary.DSN(""), Secret: secret, DurableDedup: true})

	// A retry that reaches another instance after the first attempt
	// committed: the executor cannot answer from memory, but the table
	// refuses to apply it twice and says it committed.
	id := id16()
	first, err := a.Exec(ctx, insertReq(id, 1, "", "once"))
	if err != nil || first.GetError() != nil {
		t.Fatalf("first attempt: %v %v", err, first.GetError())
	}
	var md metadata.MD
	_, err = b.Exec(ctx, insertReq(id, 2, first.GetInstance(), "once"), grpc.Trailer(&md))
	if status.Code(err) != codes.AlreadyExists || md.Get("flypg-outcome")[0] != "committed" || md.Get("flypg-commit-lsn")[0] == "" {
		t.Fatalf("retry on another instance: %v %v, want committed earlier with an LSN", err, md)
	}
	if n := e.count(t, "name = 'once'"); n != 1 {
		t.Fatalf("%d rows, want 1", n)
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
	md = nil
	_, err = a.Exec(ctx, insertReq(late, 1, "", "late"), grpc.Trailer(&md))
	if err == nil || md.Get("flypg-outcome")[0] != "not-committed" || e.count(t, "name = 'late'") != 0 {
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
	if _, err := forward.NewExecutor(context.Background(), forward.ExecutorConfig{AllowUnauthenticated: true, DurableDedup: true, DedupTable: "bad name"}); err == nil {
		t.Fatal("a table name that is not an identifier was accepted")
	}
}
