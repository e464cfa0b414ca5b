package forward_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestLostReplyAfterCommit loses the reply to a message that carried
// COMMIT — a transaction's last statement, or COMMIT itself — after the
// primary committed: the client must learn the truth by request ID (and,
// for a last statement, still get its result), never report an abort.
func TestLostReplyAfterCommit(t *testing.T) {
	e := startEnv(t)
	link := pgtest.NewLinkT(t, "app-executor", e.addr)
	_, db := openClient(t, forward.ClientConfig{Target: link.Addr(), Secret: testkit.Secret, Timeout: 5 * time.Second})

	// cutReplyAfter waits until name is committed on the primary, then
	// resets the link while the reply is still on its way (200 ms RTT),
	// and heals it for the client's questions.
	cutReplyAfter := func(name string) <-chan error {
		return e.waitCommitted(name, func() error {
			if err := link.ResetPeer(); err != nil {
				return err
			}
			return link.Clear()
		})
	}

	for _, tc := range []struct {
		name string
		run  func(ctx context.Context, tx *sql.Tx, name string) (int64, error)
		// resultGone: the result is over MaxReplayBytes, so the executor
		// cannot give it again: the answer must be a *CommittedError.
		resultGone bool
	}{
		{name: "last statement", run: func(ctx context.Context, tx *sql.Tx, name string) (int64, error) {
			var id int64
			err := tx.QueryRowContext(forward.LastStatement(ctx), `INSERT INTO items (name) VALUES ($1) RETURNING id`, name).Scan(&id)
			if err != nil {
				return 0, err
			}
			return id, tx.Commit()
		}},
		{name: "last statement, result not kept", resultGone: true, run: func(ctx context.Context, tx *sql.Tx, name string) (int64, error) {
			var id int64
			var pad string
			err := tx.QueryRowContext(forward.LastStatement(ctx), `INSERT INTO items (name) VALUES ($1) RETURNING id, repeat('x', 32768)`, name).Scan(&id, &pad)
			return id, err
		}},
		{name: "explicit commit", run: func(ctx context.Context, tx *sql.Tx, name string) (int64, error) {
			var id int64
			if err := tx.QueryRowContext(ctx, `INSERT INTO items (name) VALUES ($1) RETURNING id`, name).Scan(&id); err != nil {
				return 0, err
			}
			link.SetRTT(200 * time.Millisecond)
			return id, tx.Commit()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			link.Clear()
			ctx, rcpt := forward.WithReceipt(context.Background())
			// An isolation level keeps the transaction on its stream.
			tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, `SELECT 1`); err != nil {
				t.Fatal(err)
			}
			link.SetRTT(200 * time.Millisecond)
			name := "lost-" + tc.name
			cut := cutReplyAfter(name)
			id, err := tc.run(ctx, tx, name)
			if cerr := <-cut; cerr != nil {
				t.Fatal(cerr)
			}
			var ce *forward.CommittedError
			switch {
			case err == nil:
				if tc.name == "last statement" && id == 0 {
					t.Fatal("no RETURNING result after the reply was lost")
				}
			case errors.As(err, &ce):
				// Committed, result not available: still truthful. A
				// rollback now (GORM's reaction to the error) says
				// committed too, typed, not just "already committed".
				if rerr := tx.Rollback(); !errors.As(rerr, new(*forward.CommittedError)) {
					t.Fatalf("rollback after a CommittedError: %v, want a *CommittedError", rerr)
				}
			default:
				t.Fatalf("lost reply after a commit reported as %v", err)
			}
			if tc.resultGone && ce == nil {
				t.Fatalf("err = %v, want a *CommittedError: the result was too large to keep", err)
			}
			if errors.Is(err, forward.ErrTxAborted) {
				t.Fatal("a committed transaction reported as aborted")
			}
			if n := e.count(t, "name = $1", name); n != 1 {
				t.Fatalf("%d rows, want 1", n)
			}
			if rcpt.LSN() == 0 {
				t.Fatal("the commit LSN did not reach the receipt")
			}
			// The answer came from asking the executor, not from the reply.
			if rcpt.RPCs() < 3+boolInt(tc.name == "explicit commit") {
				t.Fatalf("%d round trips: the reply was not lost, the test proved nothing", rcpt.RPCs())
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
