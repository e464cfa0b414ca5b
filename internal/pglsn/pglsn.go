// Package pglsn holds the arithmetic of PostgreSQL WAL positions shared by
// packages lsn and forward, which must not import each other.
package pglsn

import "strconv"

// WAL layout constants of a default PostgreSQL build. PageSize is fixed at
// compile time (XLOG_BLCKSZ); the segment size is chosen at initdb and is
// 16 MiB unless the cluster was created with --wal-segsize.
const (
	PageSize           = 8192
	DefaultSegmentSize = 16 << 20

	ShortPageHeader = 24 // MAXALIGN(SizeOfXLogShortPHD)
	LongPageHeader  = 40 // MAXALIGN(SizeOfXLogLongPHD), first page of a segment
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

// Parse parses the "X/Y" text form with the server's rules: each side has 1
// to 8 hex digits, nothing else. ok is false for anything else.
func Parse(s string) (l uint64, ok bool) {
	hi, rest, ok := hexComponent(s)
	if !ok || len(rest) == 0 || rest[0] != '/' {
		return 0, false
	}
	lo, rest, ok := hexComponent(rest[1:])
	if !ok || len(rest) != 0 {
		return 0, false
	}
	return uint64(hi)<<32 | uint64(lo), true
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

// Normalize rounds a position that falls inside a WAL page header down to
// the page start. pg_current_wal_insert_lsn() read after a record that
// ended exactly on a page boundary points past the next page's header,
// while a replica reports replay at the boundary until unrelated WAL
// arrives; waiting for the header's end would hang. Every record that ended
// at or before l has ended at or before the result.
//
// segmentSize is the cluster's wal_segment_size; 0 means
// DefaultSegmentSize. It must be right: on the first page of a segment the
// header is longer.
func Normalize(l, segmentSize uint64) uint64 {
	if segmentSize == 0 {
		segmentSize = DefaultSegmentSize
	}
	off := l % PageSize
	header := uint64(ShortPageHeader)
	if l%segmentSize < PageSize {
		header = LongPageHeader
	}
	if off != 0 && off <= header {
		return l - off
	}
	return l
}
