package lsn

import (
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/flypg/flypg/internal/pglsn"
)

// LSN is a PostgreSQL write-ahead log position, a byte offset into the WAL.
// Its text form is the pg_lsn form "X/Y": the high and low 32 bits in hex.
// The zero LSN ("0/0") is smaller than every real position.
type LSN uint64

// WAL layout constants of a default PostgreSQL build. PageSize is fixed at
// compile time (XLOG_BLCKSZ); the segment size is chosen at initdb and is
// 16 MiB unless the cluster was created with --wal-segsize.
const (
	PageSize           = pglsn.PageSize
	DefaultSegmentSize = pglsn.DefaultSegmentSize
)

// ErrSyntax is wrapped by the errors Parse returns for malformed text.
var ErrSyntax = errors.New("invalid LSN syntax")

// Parse parses the "X/Y" text form PostgreSQL prints for pg_lsn values, with
// the same rules as the server: each side has 1 to 8 hex digits, nothing else.
func Parse(s string) (LSN, error) {
	l, ok := pglsn.Parse(s)
	if !ok {
		return 0, fmt.Errorf("lsn: parse %q: %w", s, ErrSyntax)
	}
	return LSN(l), nil
}

// MustParse is Parse for constants in tests and examples; it panics on error.
func MustParse(s string) LSN {
	l, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return l
}

// String returns the "X/Y" form, as PostgreSQL prints it (upper-case hex).
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// Normalize returns the position to wait for when l was read with
// pg_current_wal_insert_lsn(). When the last record ends exactly on a WAL page
// boundary, the insert position points past the next page's header, while a
// replica reports replay at the boundary itself until unrelated WAL arrives.
// Waiting for the header's end would then hang, so a position inside a page
// header is rounded down to the page start. Every record that ended at or
// before l has ended at or before the result, so waiting for it is exact.
//
// segmentSize is the cluster's wal_segment_size; 0 means DefaultSegmentSize.
func (l LSN) Normalize(segmentSize uint64) LSN {
	return LSN(pglsn.Normalize(uint64(l), segmentSize))
}

// MarshalText implements encoding.TextMarshaler with the "X/Y" form.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with Parse.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Value implements driver.Valuer: an LSN is sent as its text form, which
// PostgreSQL casts to pg_lsn.
func (l LSN) Value() (driver.Value, error) { return l.String(), nil }

// Scan implements sql.Scanner for pg_lsn values read as text.
func (l *LSN) Scan(src any) error {
	switch v := src.(type) {
	case string:
		return l.UnmarshalText([]byte(v))
	case []byte:
		return l.UnmarshalText(v)
	case nil:
		return fmt.Errorf("lsn: scan NULL: use *lsn.LSN in a nullable wrapper")
	default:
		return fmt.Errorf("lsn: scan %T: want string", src)
	}
}
