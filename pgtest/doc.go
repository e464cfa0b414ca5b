// Package pgtest runs a real, throw-away PostgreSQL cluster for integration
// tests, benchmarks and demos: one primary plus any number of streaming
// hot-standby replicas, built from the PostgreSQL server binaries installed on
// the machine (initdb, postgres, pg_basebackup).
//
// Every node lives in its own temporary directory, listens on a free port of
// 127.0.0.1 with trust authentication, and runs as a child process of the
// calling process, so it dies with it. [Cluster.Close] stops every node and
// removes every directory.
//
// A [Link] is an in-process TCP proxy (toxiproxy used as a library, without
// its HTTP API) that simulates the distance between regions and network
// faults: added round-trip time, cut connections, black holes and resets.
// With [Options.ReplicationLinks] each replica streams from the primary
// through its own Link, so a test can slow down or break replication.
//
// In tests, prefer [StartT]: it skips the test when PostgreSQL is not
// installed (and fails it in CI) and closes the cluster when the test ends.
//
// When the process runs as root (as in containers), every PostgreSQL command
// runs as the "postgres" OS user, because initdb and postgres refuse to run
// as root.
package pgtest
