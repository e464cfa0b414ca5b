package executor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Durable deduplication (Config.DurableDedup) keeps the request ID
// of every committed unit in a table on the primary, written in the unit's
// own transaction. The table's primary key then guarantees exactly-once
// where the in-memory ledger cannot: across executor restarts and across
// the several executor instances a dns:/// target reaches. A retry that
// reaches an executor that never saw the first attempt runs the unit
// again, with its ID first: if the first attempt committed, the insert
// conflicts and nothing is applied twice (the answer is that the unit
// committed earlier); if the first attempt is still running elsewhere, the
// insert waits for it. Resolve, for an ID it does not know, inserts a
// tombstone: from then on the first attempt cannot commit, so "not
// committed" is final. The cost is one more row written per unit.

// DefaultDedupTable is the table durable deduplication uses by default.
const DefaultDedupTable = "flypg_requests"

// DefaultDedupRetention is how long request IDs stay in the table.
const DefaultDedupRetention = 10 * time.Minute

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

type durable struct {
	table     string
	retention time.Duration

	mu    sync.Mutex
	ready bool // the table exists
}

func (d *durable) insertSQL() string {
	return fmt.Sprintf(`INSERT INTO %s (id, committed) VALUES ($1, true)`, d.table)
}

// ensure creates the table once; concurrent executors may race to create
// it, which is harmless.
func (d *durable) ensure(ctx context.Context, c *pgx.Conn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ready {
		return nil
	}
	q := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	id bytea PRIMARY KEY,
	committed boolean NOT NULL,
	at timestamptz NOT NULL DEFAULT now()
)`, d.table)
	for attempt := 0; ; attempt++ {
		_, err := c.Exec(ctx, q)
		var pg *pgconn.PgError
		if err == nil {
			d.ready = true
			return nil
		}
		if attempt < 2 && errors.As(err, &pg) && pg.Code == "23505" {
			continue // created concurrently by another executor
		}
		return fmt.Errorf("forward: create deduplication table %s: %w", d.table, err)
	}
}

// isConflict reports whether err is the table's primary key refusing an ID
// that is already there.
func (d *durable) isConflict(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505" && pg.TableName == d.table
}

// committedFlag reads whether the row for id records a commit (true) or a
// tombstone (false).
func (d *durable) committedFlag(ctx context.Context, c *pgx.Conn, id []byte) (bool, error) {
	var committed bool
	err := c.QueryRow(ctx, fmt.Sprintf(`SELECT committed FROM %s WHERE id = $1`, d.table), id).Scan(&committed)
	return committed, err
}

// resolve settles an ID the executor's memory does not hold: a row says
// what happened; no row gets a tombstone, after which the unit can no
// longer commit anywhere.
func (d *durable) resolve(ctx context.Context, c *pgx.Conn, id []byte) (committed bool, err error) {
	if err := d.ensure(ctx, c); err != nil {
		return false, err
	}
	// The tombstone waits for a first attempt that is still inserting the
	// same ID, then gives way to it.
	err = c.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s (id, committed) VALUES ($1, false) ON CONFLICT (id) DO NOTHING RETURNING committed`, d.table), id).Scan(&committed)
	if err == nil {
		return false, nil // tombstoned: it did not commit, and now cannot
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	// A row was there, or was committed while the insert waited: read it
	// with a snapshot taken now.
	return d.committedFlag(ctx, c, id)
}

// sweep deletes IDs older than the retention, every retention/10, until
// stop is closed.
func (x *Executor) sweep(d *durable) {
	defer x.wg.Done()
	t := time.NewTicker(max(d.retention/10, time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-x.stop:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		d.mu.Lock()
		ready := d.ready
		d.mu.Unlock()
		if ready {
			if _, err := x.pool.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE at < now() - make_interval(secs => $1)`, d.table), d.retention.Seconds()); err != nil {
				x.log.Warn("forward: executor: sweep deduplication table", "table", d.table, "err", err)
			}
		}
		cancel()
	}
}
