package forward

import (
	"context"
	"sync"

	"github.com/flypg/flypg/lsn"
)

// A Receipt collects what the forwarding driver learns about the writes
// made under one context: the commit LSN to wait for. Create it with
// WithReceipt and pass the returned context to database/sql (or GORM); the
// driver records into it. For a transaction, the context given to BeginTx
// is the one that receives the commit, since driver.Tx.Commit has none.
type Receipt struct {
	mu        sync.Mutex
	lsn       lsn.LSN
	committed int
	rpcs      int
}

type receiptKey struct{}

// WithReceipt returns a context carrying a new Receipt, and the Receipt.
func WithReceipt(ctx context.Context) (context.Context, *Receipt) {
	r := &Receipt{}
	return context.WithValue(ctx, receiptKey{}, r), r
}

// ReceiptFrom returns the Receipt in ctx, or nil.
func ReceiptFrom(ctx context.Context) *Receipt {
	r, _ := ctx.Value(receiptKey{}).(*Receipt)
	return r
}

// LSN returns the highest commit LSN recorded, 0 if nothing committed.
func (r *Receipt) LSN() lsn.LSN {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lsn
}

// Commits returns how many forwarded units committed under the receipt.
func (r *Receipt) Commits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed
}

// RPCs returns how many network round trips to the executor were made
// under the receipt.
func (r *Receipt) RPCs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rpcs
}

// Reset forgets what was recorded, so one receipt can serve several
// statements in turn.
func (r *Receipt) Reset() {
	r.mu.Lock()
	r.lsn, r.committed, r.rpcs = 0, 0, 0
	r.mu.Unlock()
}

func (r *Receipt) commit(at lsn.LSN) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.committed++
	if at > r.lsn {
		r.lsn = at
	}
	r.mu.Unlock()
}

func (r *Receipt) roundTrip() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.rpcs++
	r.mu.Unlock()
}
