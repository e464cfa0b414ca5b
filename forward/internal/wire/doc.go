// Package wire converts between Go values and the forwarding protocol
// (package forwardpb) so that a statement forwarded from a replica region
// behaves exactly as if the application's database/sql pool were connected to
// the primary with pgx's stdlib driver.
//
// # Arguments
//
// pgx's stdlib driver accepts every argument unchanged (its CheckNamedValue
// returns nil) and lets pgx encode it once the prepared statement tells it
// the parameter's type. The client cannot know that type, so [EncodeArg]
// keeps what pgx's encoding depends on: the Go kind (float32 is not float64,
// []byte is not string), the instant and zone offset of a time.Time (its wall
// clock goes into timestamp, date and time), a time.Duration as a duration,
// NULL for nil pointers, slices and driver.Valuers that say so, and slices as
// arrays of one element kind. Values pgx knows only through its type map
// (pgtype.Range, net.IP, ...) travel as pgx's own text encoding; maps and
// structs travel as JSON. On the primary, [DecodeArg] rebuilds plain Go
// values that pgx encodes as it would have encoded the originals; strings
// always go in text format, which PostgreSQL parses into the parameter type.
//
// # Results
//
// Results are not decoded on the primary. [ReadResult] forwards the column
// descriptions and the raw column values exactly as PostgreSQL sent them
// (in the DataRow layout), and the client's [Rows] decodes them with pgx's
// own codecs, per OID and format, the way stdlib's Rows.Next does. Decoding
// on the primary and re-encoding in some neutral form would lose what
// stdlib's results depend on: which Go type a column maps to, the location
// of a time.Time, the exact text of a numeric or of an interval, the
// column type names, lengths and precisions database/sql reports. With the
// raw bytes and field descriptions, the client runs the very code stdlib
// runs.
//
// This only holds if the primary asks for the result formats stdlib asks
// for: the executor must pass [ResultFormats] to pgx.Conn.Query. With pgx's
// default formats, an interval, time, inet or array column would arrive in
// binary and be formatted by pgx instead of by PostgreSQL, and the string
// would differ from what stdlib returns.
//
// # Errors
//
// [PgErrorToProto] and [PgErrorFromProto] carry a *pgconn.PgError field for
// field, so that the application sees the error a direct connection gives.
package wire
