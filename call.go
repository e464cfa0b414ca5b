package flypg

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/internal/pglsn"
	"github.com/flypg/flypg/lsn"
)

// Func is a function that runs on the primary, in one transaction, for
// Call: the explicit form of "run this on the primary and wait" (the
// original's rpc_and_wait, and its users' transaction_on_primary). tx is a
// *gorm.DB in that transaction; returning an error rolls it back.
type Func[In, Out any] func(ctx context.Context, tx *gorm.DB, in In) (Out, error)

// callFunc is a registered function with its input and output encoded.
type callFunc func(ctx context.Context, tx *gorm.DB, in []byte) ([]byte, error)

// Register registers fn under name on p. Register the same functions on
// every node (they run where the call lands: the primary for Call).
// Inputs and outputs travel as JSON.
func Register[In, Out any](p *Plugin, name string, fn Func[In, Out]) error {
	if name == "" || fn == nil {
		return errors.New("flypg: Register needs a name and a function")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.funcs[name]; dup {
		return fmt.Errorf("flypg: function %q already registered", name)
	}
	p.funcs[name] = func(ctx context.Context, tx *gorm.DB, raw []byte) ([]byte, error) {
		var in In
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, fmt.Errorf("flypg: %s: decode input: %w", name, err)
		}
		out, err := fn(ctx, tx, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("flypg: %s: encode output: %w", name, err)
		}
		return b, nil
	}
	return nil
}

// CallError is a registered function's failure, reported by the node that
// ran it; its transaction rolled back. errors.As reaches a
// *pgconn.PgError when PostgreSQL made it fail.
type CallError = forward.CallError

// ErrUnknownFunction matches a Call of a name no function is registered
// under on the node that received it.
var ErrUnknownFunction = forward.ErrUnknownFunction

// Call runs the function registered as name on a node of the primary
// region, in one transaction on the primary and one network round trip,
// and returns its output. Unless ctx says fly.NoAwait, it then waits until
// the local replica has replayed the function's commit, so that reads see
// its writes; a replication timeout returns the output together with a
// *ReplicationError (the function committed). In the primary region it
// runs in-process.
func Call[Out any](ctx context.Context, db *gorm.DB, name string, in any) (Out, error) {
	var out Out
	p, ok := FromDB(db)
	if !ok {
		return out, errors.New("flypg: Call: the *gorm.DB has no flypg plugin (db.Use(flypg.New(cfg)))")
	}
	return CallRegion[Out](ctx, db, p.Config().PrimaryRegion, name, in)
}

// CallRegion runs the function registered as name on a node of region
// (like fly_rpc's rpc_region): in-process when region is this node's
// region, otherwise on an instance found at
// dns:///<region>.<app>.internal:<port>. It waits for replication only when
// region is the primary region.
func CallRegion[Out any](ctx context.Context, db *gorm.DB, region, name string, in any) (Out, error) {
	var out Out
	p, ok := FromDB(db)
	if !ok {
		return out, errors.New("flypg: CallRegion: the *gorm.DB has no flypg plugin (db.Use(flypg.New(cfg)))")
	}
	payload, err := json.Marshal(in)
	if err != nil {
		return out, fmt.Errorf("flypg: call %s: encode input: %w", name, err)
	}
	raw, err := p.call(ctx, region, name, payload)
	if raw != nil {
		if derr := json.Unmarshal(raw, &out); derr != nil && err == nil {
			err = fmt.Errorf("flypg: call %s: decode output: %w", name, derr)
		}
	}
	return out, err
}

// call runs name in region and waits for replication when the function ran
// on the primary from a replica region.
func (p *Plugin) call(ctx context.Context, region, name string, payload []byte) ([]byte, error) {
	cfg := p.Config()
	if region == cfg.Region {
		out, _, err := p.runLocal(ctx, name, payload)
		return out, localCallError(name, err)
	}
	client, err := p.clientFor(region)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rctx, rcpt := forward.WithReceipt(ctx)
	out, commit, err := client.Call(rctx, name, payload)
	forwarded := time.Since(start)
	p.mu.Lock()
	router := p.router
	p.mu.Unlock()
	if err != nil || region != cfg.PrimaryRegion || router == nil {
		if router != nil && region == cfg.PrimaryRegion {
			p.observe(ctx, WriteEvent{Op: "call", Function: name, Forward: forwarded, Err: err, RPCs: rcpt.RPCs(), Duration: time.Since(start)})
		}
		return out, err
	}
	waited, err := router.Wait(ctx, lsn.LSN(commit))
	p.observe(ctx, WriteEvent{Op: "call", Function: name, LSN: lsn.LSN(commit), Forward: forwarded, Wait: waited, Err: err, NoAwait: fly.IsNoAwait(ctx), RPCs: rcpt.RPCs(), Duration: time.Since(start)})
	return out, err
}

// localCallError gives a function's failure in-process the shape it has
// when the function ran on another node: a *CallError.
func localCallError(name string, err error) error {
	if err == nil || errors.Is(err, ErrUnknownFunction) || errors.Is(err, forward.ErrInDoubt) {
		return err
	}
	var own *forward.CallError
	if errors.As(err, &own) {
		ce := *own
		ce.Name = name
		return &ce
	}
	ce := &forward.CallError{Name: name, Message: err.Error()}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		ce.Err = pg
	}
	return ce
}

// clientFor returns the executor client of region.
func (p *Plugin) clientFor(region string) (*forward.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("flypg: the plugin is closed")
	}
	if region == p.cfg.PrimaryRegion && p.client != nil {
		return p.client, nil
	}
	if c, ok := p.regions[region]; ok {
		return c, nil
	}
	if !validRegion(region) {
		return nil, fmt.Errorf("flypg: %q is not a region name", region)
	}
	var target string
	switch {
	case region == p.cfg.PrimaryRegion && p.cfg.PrimaryAddr != "":
		target = p.cfg.PrimaryAddr
	case p.cfg.AppName != "":
		target = p.cfg.regionAddr(region)
	default:
		return nil, fmt.Errorf("flypg: no address for region %q: AppName (FLY_APP_NAME) is not set", region)
	}
	c, err := forward.NewClient(p.clientConfig(target))
	if err != nil {
		return nil, err
	}
	p.regions[region] = c
	return c, nil
}

// runLocal runs a registered function on this node's database, in one
// transaction, and returns the insert LSN after its commit when this node
// is in the primary region. For a call the executor runs under durable
// deduplication, the call's request ID is recorded in the same
// transaction, before the function (see forward.RecordCall). A COMMIT
// whose outcome the connection's failure hides is reported as in doubt
// (forward.ErrInDoubt), never as a failure of the function.
func (p *Plugin) runLocal(ctx context.Context, name string, payload []byte) ([]byte, uint64, error) {
	p.mu.Lock()
	fn, ok := p.funcs[name]
	db, primary := p.db, p.primary
	p.mu.Unlock()
	if !ok {
		return nil, 0, fmt.Errorf("flypg: call %q: %w", name, ErrUnknownFunction)
	}
	if db == nil {
		return nil, 0, errors.New("flypg: call before db.Use(plugin)")
	}
	// fly.Local: the function's statements run in this transaction on
	// this node's database, never forwarded.
	ldb := db.WithContext(fly.Local(ctx))
	var out []byte
	ran := false // the function ran and returned nil: a failure is COMMIT's
	err := ldb.Transaction(func(tx *gorm.DB) error {
		err := forward.RecordCall(ctx, func(query string, args ...any) error {
			_, err := tx.Statement.ConnPool.ExecContext(ctx, query, args...)
			return err
		})
		if err != nil {
			return err // recorded already: the executor answers from the table
		}
		out, err = fn(ctx, tx, payload)
		ran = err == nil
		return err
	})
	if err != nil {
		if ran {
			return nil, 0, commitError(name, err)
		}
		return nil, 0, err
	}
	if !primary {
		return out, 0, nil
	}
	l, err := p.insertLSN(ldb)
	if err != nil {
		// The function committed, so this is no failure of the call (an
		// error would let a retry run it twice); without the LSN the
		// caller just cannot wait for replication.
		p.log.Warn("flypg: call committed but its commit LSN could not be read", "function", name, "err", err)
		return out, 0, nil
	}
	return out, uint64(l), nil
}

// commitError classifies the failure of a COMMIT: refused by PostgreSQL
// (a deferred constraint, a serialization failure) or turned into a
// rollback, the transaction did not commit; otherwise the outcome is
// unknown. (Even pgx's "conn closed", which claims nothing was sent, comes
// back for a COMMIT that reached the server when the connection breaks
// before its answer.)
func commitError(name string, err error) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) || errors.Is(err, pgx.ErrTxCommitRollback) || errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return fmt.Errorf("flypg: call %s: COMMIT was sent and its outcome is unknown: %w", name, errors.Join(forward.ErrInDoubt, err))
}

// insertLSN reads the primary's insert LSN (after a commit) and normalizes
// it with the cluster's WAL segment size, read once: the rule the executor
// follows for forwarded units.
func (p *Plugin) insertLSN(db *gorm.DB) (lsn.LSN, error) {
	var s string
	if err := db.Raw(`SELECT pg_current_wal_insert_lsn()::text`).Scan(&s).Error; err != nil {
		return 0, err
	}
	l, err := lsn.Parse(s)
	if err != nil {
		return 0, err
	}
	seg := p.walSegSize.Load()
	if seg == 0 {
		var setting string
		if err := db.Raw(pglsn.SegmentSizeSQL).Scan(&setting).Error; err != nil {
			return 0, err
		}
		seg = pglsn.ParseSegmentSize(setting)
		p.walSegSize.Store(seg)
	}
	return l.Normalize(seg), nil
}

// callHandler serves Call requests for the node's executor.
type callHandler struct{ p *Plugin }

func (h callHandler) HandleCall(ctx context.Context, name string, payload []byte) ([]byte, uint64, error) {
	return h.p.runLocal(ctx, name, payload)
}

// RecordsCalls: runLocal records the request ID of a call the executor
// runs under durable deduplication.
func (h callHandler) RecordsCalls() bool { return true }
