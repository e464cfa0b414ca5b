package lsn

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrTimeout: the tracker's own timeout (Config.Timeout) ended the wait
	// before the local database replayed the target.
	ErrTimeout = errors.New("replication wait timed out")

	// ErrPromoted: the local database is not in recovery, so it will never
	// replay the target. It was promoted, or it is a primary and the tracker
	// was not configured with AllowPrimary.
	ErrPromoted = errors.New("local database is not a replica (pg_is_in_recovery() is false): it was promoted or is a primary, so it will not replay")

	// ErrTimelineChanged: the local replica switched to a new timeline (it
	// follows a new primary after a failover) while the wait was pending.
	// A write of the old primary after the switch point is not in the new
	// history and will never be replayed, although positions of the new
	// timeline will soon pass its LSN; so every wait pending at the switch
	// ends with this error rather than at a position that no longer means
	// the write is there. The write committed (on the old primary); whether
	// it survived the failover, only the new primary can tell.
	ErrTimelineChanged = errors.New("the local replica switched to a new timeline (failover): a write of the old primary may not be in its history")

	// ErrClosed: the tracker was closed.
	ErrClosed = errors.New("tracker closed")
)

// WaitError is the error Tracker.Wait returns. Use errors.Is with ErrTimeout,
// ErrPromoted, ErrTimelineChanged, ErrClosed, context.Canceled or context.DeadlineExceeded to
// learn why the wait ended; errors.As reaches the last error of the source
// (for example a *pgconn.PgError) when looks were failing.
type WaitError struct {
	Target  LSN           // the position waited for (after Normalize)
	Seen    LSN           // the last replay position the tracker observed
	Waited  time.Duration // how long the wait lasted
	Err     error         // why the wait ended
	LastErr error         // the source's most recent error, if its last look failed
}

func (e *WaitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lsn: wait for %s (replayed %s after %s): %v", e.Target, e.Seen, e.Waited.Round(time.Microsecond), e.Err)
	if e.LastErr != nil && e.LastErr != e.Err {
		fmt.Fprintf(&b, " (last look failed: %v)", e.LastErr)
	}
	return b.String()
}

// Unwrap returns the reason and, if any, the source's last error.
func (e *WaitError) Unwrap() []error {
	if e.LastErr != nil && e.LastErr != e.Err {
		return []error{e.Err, e.LastErr}
	}
	return []error{e.Err}
}
