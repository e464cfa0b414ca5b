package lsn

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
)

// LSN is a PostgreSQL write-ahead log position, a byte offset into the WAL.
// Its text form is the pg_lsn form "X/Y": the high and low 32 bits in hex.
// The zero LSN ("0/0") is smaller than every real position.
type LSN uint64

// WAL layout constants of a default PostgreSQL build. PageSize is fixed at
// compile time (XLOG_BLCKSZ); the segment size is chosen at initdb and is
// 16 MiB unless the cluster was created with --wal-segsize.
const (
	PageSize           = 8192
	DefaultSegmentSize = 16 << 20

	shortPageHeader = 24 // MAXALIGN(SizeOfXLogShortPHD)
	longPageHeader  = 40 // MAXALIGN(SizeOfXLogLongPHD), first page of a segment
)

// SegmentSizeSQL reads the cluster's wal_segment_size in bytes (text), for
// ParseSegmentSize. Read it from the server: every rule that normalizes a
// commit LSN must use the server's own segment size.
const SegmentSizeSQL = `SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'`

// ParseSegmentSize parses SegmentSizeSQL's answer; DefaultSegmentSize if
// it is not a positive number.
func ParseSegmentSize(setting string) uint64 {
	n, err := strconv.ParseUint(setting, 10, 64)
	if err != nil || n == 0 {
		return DefaultSegmentSize
	}
	return n
}

// ErrSyntax is wrapped by the errors Parse returns for malformed text.
var ErrSyntax = errors.New("invalid LSN syntax")

// Parse parses the "X/Y" text form PostgreSQL prints for pg_lsn values, with
// the same rules as the server: each side has 1 to 8 hex digits, nothing else.
func Parse(s string) (LSN, error) {
	hi, rest, ok := hexComponent(s)
	if ok && len(rest) > 0 && rest[0] == '/' {
		var lo uint32
		if lo, rest, ok = hexComponent(rest[1:]); ok && len(rest) == 0 {
			return LSN(uint64(hi)<<32 | uint64(lo)), nil
		}
	}
	return 0, fmt.Errorf("lsn: parse %q: %w", s, ErrSyntax)
}

// hexComponent reads 1 to 8 hex digits from the front of s.
func hexComponent(s string) (v uint32, rest string, ok bool) {
	n := 0
	for n < len(s) {
		c := s[n]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return v, s[n:], n > 0
		}
		if n == 8 {
			return 0, s, false // a ninth digit: too long
		}
		v = v<<4 | uint32(d)
		n++
	}
	return v, s[n:], n > 0
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
	if segmentSize == 0 {
		segmentSize = DefaultSegmentSize
	}
	off := uint64(l) % PageSize
	header := uint64(shortPageHeader)
	if uint64(l)%segmentSize < PageSize {
		header = longPageHeader // the first page of a segment
	}
	if off != 0 && off <= header {
		return l - LSN(off)
	}
	return l
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
