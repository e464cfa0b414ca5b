// Package testkit holds what the tests of flypg's packages share: the
// shared secret of test nodes, a server (an executor, a plugin, a gRPC
// server) on a free loopback port for the length of a test, and waiting
// for a condition without sleeping a fixed time. Package pgtest starts the
// PostgreSQL clusters the tests run against.
//
// testkit imports nothing of flypg, so that every package's tests, inside
// the package or outside it, can use it.
package testkit
