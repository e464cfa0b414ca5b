package executor

import (
	"container/list"
	"context"

	"github.com/flypg/flypg/forward/internal/sqlscan"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// cachedStmt is a statement prepared on a connection, with what its text
// says about session state (see sqlscan.Classify).
type cachedStmt struct {
	sd     *pgconn.StatementDescription
	taint  taint
	resets bool // may deallocate the connection's prepared statements
}

// describe returns the prepared statement for sql on c, preparing it on
// first use. Each connection keeps its most recently used statements;
// older ones are deallocated, so that applications that generate many
// distinct statements do not grow the primary's memory without bound.
func describe(ctx context.Context, c *pgx.Conn, sql string) (*cachedStmt, error) {
	cache := stmtCacheOf(c)
	if el, ok := cache.index[sql]; ok {
		cache.order.MoveToFront(el)
		return el.Value.(*cachedStmt), nil
	}
	sd, err := c.Prepare(ctx, sql, sql)
	if err != nil {
		return nil, err
	}
	cs := &cachedStmt{sd: sd, taint: sqlscan.Classify(sql), resets: sqlscan.ResetsStatements(sql)}
	cache.index[sql] = cache.order.PushFront(cs)
	for cache.order.Len() > stmtCacheSize {
		old := cache.order.Back()
		cache.order.Remove(old)
		oldSQL := old.Value.(*cachedStmt).sd.SQL
		delete(cache.index, oldSQL)
		if err := c.Deallocate(ctx, oldSQL); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// invalidate forgets sql's prepared statement on c, after the primary
// refused to run it as prepared: its result type changed (0A000, "cached
// plan must not change result type", after ALTER TABLE) or it is gone
// (26000, after DEALLOCATE). The next use prepares it again.
func invalidate(ctx context.Context, c *pgx.Conn, sql string) {
	cache := stmtCacheOf(c)
	if el, ok := cache.index[sql]; ok {
		cache.order.Remove(el)
		delete(cache.index, sql)
	}
	c.Deallocate(ctx, sql) // forgets pgx's own copy; a statement already gone is no error
}

// staleStatement reports whether err is the primary refusing a prepared
// statement that no longer fits or exists; nothing of the statement ran.
func staleStatement(err error) bool {
	pg, ok := err.(*pgconn.PgError)
	return ok && (pg.Code == "0A000" || pg.Code == "26000")
}

// resetStatements drops every prepared statement of c, on the primary and
// in both caches, after a statement that may have deallocated them.
func resetStatements(ctx context.Context, c *pgx.Conn) error {
	sc := stmtCacheOf(c)
	sc.index, sc.order = map[string]*list.Element{}, list.New()
	return c.DeallocateAll(ctx)
}

const stmtCacheSize = 256

type stmtCache struct {
	index map[string]*list.Element
	order *list.List
}

const stmtCacheKey = "flypg.forward.stmts"

// stmtCacheOf keeps the cache in the connection's own custom data, so it
// lives and dies with the connection.
func stmtCacheOf(c *pgx.Conn) *stmtCache {
	data := c.PgConn().CustomData()
	if sc, ok := data[stmtCacheKey].(*stmtCache); ok {
		return sc
	}
	sc := &stmtCache{index: map[string]*list.Element{}, order: list.New()}
	data[stmtCacheKey] = sc
	return sc
}
