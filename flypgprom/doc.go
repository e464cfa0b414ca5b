// Package flypgprom exports the work of a flypg plugin as Prometheus
// metrics. It is a flypg tracer: give it in flypg.Config.Tracers.
//
//	metrics, err := flypgprom.New(registry, nil)
//	if err != nil { ... }
//	plugin := flypg.New(flypg.Config{ /* ... */ Tracers: []any{metrics}})
//
// The collectors are registered on the Registerer given to New, never on
// the global one unless you pass prometheus.DefaultRegisterer. One Metrics
// serves one plugin; two plugins on one registry (two databases) need two,
// with different constant labels, e.g. {"db": "orders"}.
//
// Metrics, all in the namespace "flypg":
//
//	forwarded_total{op,outcome}                 forwarded writes (statements, transactions, calls);
//	                                            outcome ok, error, replication_timeout or replication_error
//	forward_rpc_duration_seconds{method,code}   round trips to the primary region's executor
//	replication_wait_duration_seconds           waits for the local replica to replay a write
//	replication_wait_timeouts_total             waits that ended before the replica replayed the write
//	tracker_polls_total{outcome}                looks at the local replica's replay position
//	replay_lag_bytes                            WAL between this node's newest forwarded write and the replica's replay
//	replay_lag_seconds                          age of the replica's last replayed transaction while it is behind
//	executor_inflight_units                     units the executor this node serves is running
//	executor_open_transactions                  forwarded transactions holding a primary connection
//
// The core package flypg does not import Prometheus: an application that
// does not import this package does not link it.
package flypgprom
