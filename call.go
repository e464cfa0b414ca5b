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
	"github.com/flypg/flypg/forward/executor"
	"github.com/flypg/flypg/lsn"
)

// Func is a function that runs on the primary, in one transaction, for
// Function.Call: the explicit form of "run this on the primary and wait"
// (the original's rpc_and_wait, and its users' transaction_on_primary). tx
// is a *gorm.DB in that transaction; returning an error rolls it back.
type Func[In, Out any] func(ctx context.Context, tx *gorm.DB, in In) (Out, error)

// callFunc is a registered function with its input and output encoded.
type callFunc func(ctx context.Context, tx *gorm.DB, in []byte) ([]byte, error)

// Function is a typed handle of a registered function: its Call takes an
// In and returns an Out. Register returns one; Declare makes one for a
// function registered only on other nodes. Inputs and outputs travel as
// JSON.
type Function[In, Out any] struct {
	name string
}

// Register registers fn under name on p and returns its handle. Register
// the same functions on every node: a call runs where it lands (a node of
// the primary region, for Call).
func Register[In, Out any](p *Plugin, name string, fn Func[In, Out]) (Function[In, Out], error) {
	f := Function[In, Out]{name: name}
	if name == "" || fn == nil {
		return f, errors.New("flypg: Register needs a name and a function")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.funcs[name]; dup {
		return f, fmt.Errorf("flypg: function %q already registered", name)
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
	return f, nil
}

// Declare returns the handle of the function registered as name, for code
// that does not hold what Register returned: a function registered
// elsewhere in the application, on other nodes only, or served by a
// standalone flypg-executor (-function). The types are the caller's
// promise: a mismatch fails when the input or output is decoded.
func Declare[In, Out any](name string) Function[In, Out] {
	return Function[In, Out]{name: name}
}

// Name returns the name the function is registered under.
func (f Function[In, Out]) Name() string { return f.name }

// Call runs the function on a node of the primary region, in one
// transaction on the primary and one network round trip, and returns its
// output. Unless ctx says fly.NoAwait, it then waits until the local
// replica has replayed the function's commit, so that reads see its
// writes; a replication timeout returns the output together with a
// *ReplicationError (the function committed). In the primary region it
// runs in-process. db is a *gorm.DB with the plugin installed.
func (f Function[In, Out]) Call(ctx context.Context, db *gorm.DB, in In) (Out, error) {
	var out Out
	p, ok := FromDB(db)
	if !ok {
		return out, errors.New("flypg: call: the *gorm.DB has no flypg plugin (db.Use(flypg.New(cfg)))")
	}
	return f.CallRegion(ctx, db, p.Config().PrimaryRegion, in)
}

// CallRegion runs the function on a node of region (like fly_rpc's
// rpc_region): in-process when region is this node's region, otherwise on
// an instance found at dns:///<region>.<app>.internal:<port>. It waits for
// replication only when region is the primary region.
func (f Function[In, Out]) CallRegion(ctx context.Context, db *gorm.DB, region string, in In) (Out, error) {
	return callRegion[Out](ctx, db, region, f.name, in)
}

// Call runs the function registered as name, like Function.Call, with an
// input of any type.
//
// Deprecated: use the Function that Register returns (or Declare), whose
// Call checks the input's type as well as the output's.
func Call[Out any](ctx context.Context, db *gorm.DB, name string, in any) (Out, error) {
	return Declare[any, Out](name).Call(ctx, db, in)
}

// CallRegion runs the function registered as name in region, like
// Function.CallRegion, with an input of any type.
//
// Deprecated: use the Function that Register returns (or Declare), whose
// CallRegion checks the input's type as well as the output's.
func CallRegion[Out any](ctx context.Context, db *gorm.DB, region, name string, in any) (Out, error) {
	return callRegion[Out](ctx, db, region, name, in)
}

func callRegion[Out any](ctx context.Context, db *gorm.DB, region, name string, in any) (Out, error) {
	var out Out
	p, ok := FromDB(db)
	if !ok {
		return out, errors.New("flypg: call: the *gorm.DB has no flypg plugin (db.Use(flypg.New(cfg)))")
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
	start := time.Now()
	local := region == cfg.Region
	ctx, end := p.tracers.startCall(ctx, CallStart{Function: name, Region: region, Local: local})
	if local {
		out, _, err := p.runLocal(ctx, name, payload)
		err = localCallError(name, err)
		end(CallEnd{Duration: time.Since(start), Err: err})
		return out, err
	}
	client, err := p.clientFor(region)
	if err != nil {
		end(CallEnd{Duration: time.Since(start), Err: err})
		return nil, err
	}
	rctx, rcpt := forward.WithReceipt(ctx)
	out, commit, err := client.Call(rctx, name, payload)
	forwarded := time.Since(start)
	p.mu.Lock()
	router := p.router
	p.mu.Unlock()
	if err != nil || region != cfg.PrimaryRegion || router == nil {
		if router != nil && region == cfg.PrimaryRegion {
			p.tracers.write(ctx, WriteEvent{Op: "call", Function: name, Forward: forwarded, Err: err, RPCs: rcpt.RPCs(), Duration: time.Since(start)})
		}
		end(CallEnd{Duration: time.Since(start), Err: err})
		return out, err
	}
	l := commit
	waited, err := router.Wait(ctx, l)
	ev := WriteEvent{Op: "call", Function: name, LSN: l, Forward: forwarded, Wait: waited, Err: err, NoAwait: fly.IsNoAwait(ctx), RPCs: rcpt.RPCs(), Duration: time.Since(start)}
	p.tracers.write(ctx, ev)
	end(CallEnd{LSN: l, Wait: waited, Duration: ev.Duration, Err: err})
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
// transaction, before the function (see executor.RecordCall). A COMMIT
// whose outcome the connection's failure hides is reported as in doubt
// (forward.ErrInDoubt), never as a failure of the function.
func (p *Plugin) runLocal(ctx context.Context, name string, payload []byte) ([]byte, lsn.LSN, error) {
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
		err := executor.RecordCall(ctx, func(query string, args ...any) error {
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
	return out, l, nil
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
		if err := db.Raw(lsn.SegmentSizeSQL).Scan(&setting).Error; err != nil {
			return 0, err
		}
		seg = lsn.ParseSegmentSize(setting)
		p.walSegSize.Store(seg)
	}
	return l.Normalize(seg), nil
}

// callHandler serves Call requests for the node's executor.
type callHandler struct{ p *Plugin }

func (h callHandler) HandleCall(ctx context.Context, name string, payload []byte) ([]byte, lsn.LSN, error) {
	return h.p.runLocal(ctx, name, payload)
}

// RecordsCalls: runLocal records the request ID of a call the executor
// runs under durable deduplication.
func (h callHandler) RecordsCalls() bool { return true }
