package lsn

import (
	"context"
	"time"
)

// Status is what a Source reports about the local database.
type Status struct {
	// Replayed is the end of the last WAL record the database has replayed
	// (pg_last_wal_replay_lsn()); zero when unknown.
	Replayed LSN
	// InRecovery reports pg_is_in_recovery(): true on a streaming replica.
	InRecovery bool
	// ReplayedAt is the commit time of the last replayed transaction
	// (pg_last_xact_replay_timestamp()), zero when unknown. It lets callers
	// estimate replay lag in seconds.
	ReplayedAt time.Time
	// Timeline is the timeline the database replays, zero when unknown (a
	// source that does not say). A newer one than seen before ends the
	// waits pending at it (ErrTimelineChanged).
	Timeline uint32
}

// Source reports the replay progress of the local database. A Tracker calls
// it from one goroutine, one call at a time, and only while someone waits.
type Source interface {
	// Replay returns the current status. after is the last position the
	// tracker has seen; a source may block until replay passes it, bounded by
	// ctx. Polling sources ignore it.
	Replay(ctx context.Context, after LSN) (Status, error)
}

// SourceFunc adapts a function to the Source interface.
type SourceFunc func(ctx context.Context, after LSN) (Status, error)

// Replay calls f.
func (f SourceFunc) Replay(ctx context.Context, after LSN) (Status, error) { return f(ctx, after) }
