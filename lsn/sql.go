package lsn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ReplaySource is the default Source: it asks the local database directly
// for pg_last_wal_replay_lsn(), pg_is_in_recovery() and the timeline its
// WAL receiver follows, one query per look.
//
// It keeps one connection of db for itself between looks, so a busy
// application pool never delays a look; the connection is replaced after
// an error.
type ReplaySource struct {
	conn heldConn
}

// NewReplaySource returns a ReplaySource that queries db.
func NewReplaySource(db *sql.DB) *ReplaySource { return &ReplaySource{conn: heldConn{db: db}} }

// replayQuery's timeline is the WAL receiver's; while no receiver runs
// (replication cut, reconnecting), the last restart point's, which may lag
// behind but never runs ahead (the file is read only then).
const replayQuery = `SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(),
 COALESCE(NULLIF((SELECT received_tli FROM pg_stat_wal_receiver), 0), (SELECT timeline_id FROM pg_control_checkpoint()))`

// Replay implements Source.
func (s *ReplaySource) Replay(ctx context.Context, _ LSN) (Status, error) {
	var (
		st       Status
		replayed sql.NullString
		at       sql.NullTime
		tli      sql.NullInt64
	)
	err := s.conn.do(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, replayQuery).Scan(&st.InRecovery, &replayed, &at, &tli)
	})
	if err != nil {
		return Status{}, fmt.Errorf("lsn: replay source: %w", err)
	}
	if tli.Valid && tli.Int64 > 0 {
		st.Timeline = uint32(tli.Int64)
	}
	return finish(st, replayed, at)
}

// Close releases the connection the source holds.
func (s *ReplaySource) Close() error { return s.conn.Close() }

// heldConn is one connection of a pool kept for a source's looks.
type heldConn struct {
	db *sql.DB

	mu   sync.Mutex
	conn *sql.Conn
}

// do runs f on the held connection, opening it first if needed and dropping
// it after a failure so that the next look starts on a fresh connection.
func (h *heldConn) do(ctx context.Context, f func(*sql.Conn) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		c, err := h.db.Conn(ctx)
		if err != nil {
			return err
		}
		h.conn = c
	}
	err := f(h.conn)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		h.conn.Close()
		h.conn = nil
	}
	return err
}

// Close returns the held connection to its pool.
func (h *heldConn) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return nil
	}
	err := h.conn.Close()
	h.conn = nil
	return err
}

func finish(st Status, replayed sql.NullString, at sql.NullTime) (Status, error) {
	if replayed.Valid {
		l, err := Parse(replayed.String)
		if err != nil {
			return Status{}, fmt.Errorf("lsn: replay source: %w", err)
		}
		st.Replayed = l
	}
	if at.Valid {
		st.ReplayedAt = at.Time
	}
	return st, nil
}

// WatchSource is the original fly_postgres approach, kept for parity and
// comparison: each look calls the watch_for_lsn_change stored function
// (package migration installs it), which polls inside the server every
// 50 ms until replay passes the tracker's last position or its own timeout
// ends. Use it with a Schedule that does not pause (the function blocks by
// itself), e.g. func(time.Duration) time.Duration { return 0 }.
type WatchSource struct {
	conn    heldConn
	timeout time.Duration
}

// NewWatchSource returns a WatchSource; timeout is the function's own limit
// per call (the original uses 2 s); zero means 2 s.
func NewWatchSource(db *sql.DB, timeout time.Duration) *WatchSource {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &WatchSource{conn: heldConn{db: db}, timeout: timeout}
}

const watchQuery = `SELECT watch_for_lsn_change($1, $2), pg_is_in_recovery(), pg_last_xact_replay_timestamp()`

// Replay implements Source. It returns when replay passes after, or with
// the unchanged position when the function's timeout ends.
func (s *WatchSource) Replay(ctx context.Context, after LSN) (Status, error) {
	var (
		st       Status
		replayed sql.NullString
		at       sql.NullTime
	)
	err := s.conn.do(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, watchQuery, after.String(), s.timeout.Seconds()).Scan(&replayed, &st.InRecovery, &at)
	})
	if err != nil {
		return Status{}, fmt.Errorf("lsn: watch source: %w", err)
	}
	if !replayed.Valid {
		// The function timed out: replay has not passed after.
		st.Replayed = after
		return st, nil
	}
	return finish(st, replayed, at)
}

// Close releases the connection the source holds.
func (s *WatchSource) Close() error { return s.conn.Close() }
