package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
)

type transferIn struct {
	From, To uint
	Amount   int64
}

type transferOut struct {
	FromBalance, ToBalance int64
}

var errNotPositive = errors.New("amount must be positive")

// transfer moves an amount between two accounts in one transaction on the
// primary. It credits first and debits second, so that a failing debit
// (the balance check) proves that the credit rolls back with it.
func transfer(ctx context.Context, tx *gorm.DB, in transferIn) (transferOut, error) {
	var out transferOut
	if in.Amount <= 0 {
		return out, errNotPositive
	}
	var accts []Account
	if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id IN ?", []uint{in.From, in.To}).Order("id").Find(&accts).Error; err != nil {
		return out, err
	}
	if len(accts) != 2 {
		return out, errors.New("no such account")
	}
	if err := tx.Model(&Account{}).Where("id = ?", in.To).Update("balance", gorm.Expr("balance + ?", in.Amount)).Error; err != nil {
		return out, err
	}
	if err := tx.Model(&Account{}).Where("id = ?", in.From).Update("balance", gorm.Expr("balance - ?", in.Amount)).Error; err != nil {
		return out, err
	}
	var from, to Account
	if err := tx.First(&from, in.From).Error; err != nil {
		return out, err
	}
	if err := tx.First(&to, in.To).Error; err != nil {
		return out, err
	}
	return transferOut{FromBalance: from.Balance, ToBalance: to.Balance}, nil
}

// whereAmI reports where it ran: pg_is_in_recovery() of its database.
func whereAmI(ctx context.Context, tx *gorm.DB, _ struct{}) (bool, error) {
	var rec bool
	err := tx.Raw("SELECT pg_is_in_recovery()").Scan(&rec).Error
	return rec, err
}

func balances(t *testing.T, db *gorm.DB, ids ...uint) []int64 {
	t.Helper()
	var out []int64
	for _, id := range ids {
		var a Account
		ok(t, db.First(&a, id))
		out = append(out, a.Balance)
	}
	return out
}

func wantBalances(t *testing.T, db *gorm.DB, a, b *Account, wantA, wantB int64) {
	t.Helper()
	got := balances(t, db, a.ID, b.ID)
	if got[0] != wantA || got[1] != wantB {
		t.Fatalf("balances read back as %v, want [%d %d]", got, wantA, wantB)
	}
}

// TestCall: flypg.Register and its Function's Call run a registered function in one
// transaction on the primary in one round trip, and the caller reads its
// effect right after; a failing function rolls back; unknown names fail
// with ErrUnknownFunction; CallRegion to the own region runs in-process;
// in the primary region Call runs in-process.
func TestCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The same functions on every node.
	var (
		transferFn flypg.Function[transferIn, transferOut]
		whereFn    flypg.Function[struct{}, bool]
		err        error
	)
	for _, p := range []*flypg.Plugin{e.pPlug, e.rPlug} {
		transferFn, err = flypg.Register(p, "transfer", transfer)
		noErr(t, err)
		whereFn, err = flypg.Register(p, "where", whereAmI)
		noErr(t, err)
	}
	if _, err := flypg.Register(e.rPlug, "transfer", transfer); err == nil {
		t.Error("registering a name twice succeeded")
	}
	alice, bob := Account{Owner: "alice", Balance: 100}, Account{Owner: "bob"}
	ok(t, e.replica.Create(&alice))
	ok(t, e.replica.Create(&bob))
	ctx := context.Background()

	var out transferOut
	rpcs, waits := e.counted(func() {
		var err error
		out, err = transferFn.Call(ctx, e.replica, transferIn{From: alice.ID, To: bob.ID, Amount: 30})
		noErr(t, err)
	})
	if out != (transferOut{FromBalance: 70, ToBalance: 30}) {
		t.Fatalf("transfer returned %+v", out)
	}
	if rpcs != 1 || waits != 1 {
		t.Fatalf("Call: %d round trips and %d waits, want 1 and 1", rpcs, waits)
	}
	wantBalances(t, e.replica, &alice, &bob, 70, 30) // read-your-writes
	wantBalances(t, e.plain, &alice, &bob, 70, 30)

	// The debit breaks the balance check after the credit: both roll back.
	_, err = transferFn.Call(ctx, e.replica, transferIn{From: alice.ID, To: bob.ID, Amount: 1000})
	var ce *flypg.CallError
	if !errors.As(err, &ce) || sqlState(err) != "23514" {
		t.Fatalf("overdraft: %v, want a *CallError with SQLSTATE 23514", err)
	}
	wantBalances(t, e.replica, &alice, &bob, 70, 30)
	wantBalances(t, e.plain, &alice, &bob, 70, 30)

	// An error of the function's own.
	_, err = transferFn.Call(ctx, e.replica, transferIn{From: alice.ID, To: bob.ID, Amount: -5})
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), errNotPositive.Error()) {
		t.Fatalf("negative amount: %v, want a *CallError saying %q", err, errNotPositive)
	}

	_, err = flypg.Declare[any, transferOut]("no-such-function").Call(ctx, e.replica, nil)
	if !errors.Is(err, flypg.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v, want ErrUnknownFunction", err)
	}

	// Concurrent calls serialize on the primary's row locks.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := transferFn.Call(ctx, e.replica, transferIn{From: alice.ID, To: bob.ID, Amount: 1}); err != nil {
				t.Errorf("concurrent transfer: %v", err)
			}
		})
	}
	wg.Wait()
	wantBalances(t, e.replica, &alice, &bob, 60, 40)

	// NoAwait: forwarded, committed, not waited for.
	_, waits = e.counted(func() {
		_, err := transferFn.Call(fly.NoAwait(ctx), e.replica, transferIn{From: alice.ID, To: bob.ID, Amount: 10})
		noErr(t, err)
	})
	if waits != 0 {
		t.Fatalf("NoAwait Call waited %d times", waits)
	}
	wantBalances(t, e.plain, &alice, &bob, 50, 50)

	// CallRegion to the own region runs in-process, on the local replica.
	var rec bool
	rpcs, _ = e.counted(func() {
		rec, err = whereFn.CallRegion(ctx, e.replica, replicaRegion, struct{}{})
		noErr(t, err)
	})
	if !rec || rpcs != 0 {
		t.Fatalf("CallRegion(own region): in recovery %v, %d round trips; want in-process on the replica", rec, rpcs)
	}
	if _, err := flypg.Declare[struct{}, bool]("nope").CallRegion(ctx, e.replica, replicaRegion, struct{}{}); !errors.Is(err, flypg.ErrUnknownFunction) {
		t.Fatalf("CallRegion(own region) of an unknown name: %v", err)
	}
	// Call from the replica region lands on the primary.
	rec, err = whereFn.Call(ctx, e.replica, struct{}{})
	noErr(t, err)
	if rec {
		t.Fatal("Call from the replica region ran on a server in recovery")
	}
	// In the primary region, Call runs in-process on the primary.
	before := e.pPlug.Stats()
	out, err = transferFn.Call(ctx, e.primary, transferIn{From: bob.ID, To: alice.ID, Amount: 5})
	noErr(t, err)
	if out != (transferOut{FromBalance: 45, ToBalance: 55}) || e.pPlug.Stats() != before {
		t.Fatalf("primary-region Call returned %+v (stats %+v)", out, e.pPlug.Stats())
	}
	wantBalances(t, e.plain, &alice, &bob, 55, 45)
	if _, err := whereFn.Call(ctx, e.plain, struct{}{}); err == nil {
		t.Fatal("Call on a *gorm.DB without the plugin succeeded")
	}
}
