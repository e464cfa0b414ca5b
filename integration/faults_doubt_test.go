package integration

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// TestFaultCancelledUnitOutcomeIsKnown cancels forwarded statements (by
// their gRPC deadline) at random moments while the executor and its primary
// connections stay healthy, then asks the executor what became of each,
// naming the executor instance (so that "never arrived" reads as not
// committed). The executor's answer must agree with the data: committed
// exactly when the row is on the primary. And since no primary connection
// ever failed, the executor always knows: "unknown" (in doubt) is only
// for a primary connection that broke after the statement was sent.
func TestFaultCancelledUnitOutcomeIsKnown(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultConfig{})
	e.mustWrite("warm-up")
	raw := newRawExecutor(t, e.execAddr)
	ctx := context.Background()

	resolve := func(id []byte, instance string) *forwardpb.ResolveResponse {
		t.Helper()
		for {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := raw.api.Resolve(callCtx(rctx, protocol.Version),
				&forwardpb.ResolveRequest{Unit: &forwardpb.Unit{RequestId: id, Attempt: 2, Instance: instance}})
			cancel()
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if resp.GetOutcome() != forwardpb.ResolveResponse_OUTCOME_RUNNING {
				return resp
			}
		}
	}
	instance := resolve(newUnit().RequestId, "").GetInstance()
	if instance == "" {
		t.Fatal("the executor did not say who it is")
	}

	attempts := 150
	if faultSoak() {
		attempts = 5000
	}
	r := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 3))
	tally := map[forwardpb.ResolveResponse_Outcome]int{}
	var falseDoubt []string
	for i := 0; i < attempts; i++ {
		key := fmt.Sprintf("deadline-%d", i)
		u := newUnit()
		// A new statement text each time: the executor prepares it, one
		// more round trip to the primary for the deadline to land in.
		st := insertStmt(key)
		st.Sql = fmt.Sprintf("INSERT INTO fault_writes (key) VALUES ($1) -- %d", i)
		dctx, cancel := context.WithTimeout(ctx, time.Duration(200+r.IntN(2800))*time.Microsecond)
		raw.api.Exec(callCtx(dctx, protocol.Version), &forwardpb.ExecRequest{Unit: u, Statement: st})
		cancel()
		out := resolve(u.RequestId, instance).GetOutcome()
		tally[out]++
		n := e.onPrimary(key)
		switch out {
		case forwardpb.ResolveResponse_OUTCOME_COMMITTED:
			if n != 1 {
				t.Errorf("%s: the executor says committed, the primary has %d rows", key, n)
			}
		case forwardpb.ResolveResponse_OUTCOME_NOT_COMMITTED:
			if n != 0 {
				t.Errorf("%s: the executor says not committed, the primary has %d rows", key, n)
			}
		default:
			falseDoubt = append(falseDoubt, fmt.Sprintf("%s (%d rows)", key, n))
		}
	}
	t.Logf("%d cancelled statements: %v", attempts, tally)
	e.healthy("after cancellations")
	if len(falseDoubt) > 0 {
		t.Fatalf("with a healthy primary connection, %d of %d cancelled statements were recorded by the executor as \"unknown\" (in doubt; a retry is told \"the first attempt lost its primary connection during COMMIT\", and Resolve can never settle them): %v. "+
			"Cause: forward/pipeline.go pipeline() treats every p.Flush error as kindConnInDoubt, including pgconn's \"timeout: context already done\" error of a pipeline that StartPipeline never started because the call's context ended while describe() prepared the statement; nothing was sent, so the unit certainly did not commit",
			len(falseDoubt), attempts, falseDoubt)
	}
}
