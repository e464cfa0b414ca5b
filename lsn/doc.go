// Package lsn provides PostgreSQL WAL positions (LSN) and the Tracker that
// waits until the local replica has replayed one.
//
// After a write commits on the primary, the primary's commit LSN travels back
// to the caller; waiting for the local replica to replay it before the next
// read gives read-your-writes on a replica. One Tracker per local database
// serves all waiters:
//
//   - it makes no query while nobody waits;
//   - one look (one query) serves every waiter, however many there are;
//   - the first look comes at once, later looks back off per a Schedule, and
//     restart quickly whenever replay advances;
//   - a waiter whose context ends leaves at once; a waiter that registers
//     while a look is in flight is served by that look;
//   - a local database that is not in recovery (a promoted replica) ends
//     waits with ErrPromoted instead of letting them hang;
//   - while the database fails, the tracker backs off and recovers, and
//     waiters keep waiting or fail at once per Config.OnError.
//
// Replay progress comes from a Source. ReplaySource, the default, polls
// pg_last_wal_replay_lsn(). WatchSource calls the original fly_postgres
// stored function watch_for_lsn_change (see package migration), for parity
// and comparison.
package lsn
