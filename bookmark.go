package flypg

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/lsn"
)

// A Bookmark names everything an application wrote up to a point: per
// database cluster, the commit position of the last write, the cluster's
// system identifier and its timeline, authenticated with the secret the
// nodes share. Reads under a bookmark (WithBookmark), in any region, see
// those writes. The zero value names nothing.
//
// Carry a bookmark wherever the next read may happen: Middleware carries
// it between HTTP requests (header Flypg-Bookmark, cookie flypg_bookmark),
// a job's payload carries BookmarkFrom(ctx).String(), and package
// flypggrpc carries it between services.
type Bookmark struct {
	marks []callbacks.Mark // sorted by system identifier, at most one each
}

// ErrBadBookmark matches the error of ParseBookmark for malformed text.
var ErrBadBookmark = errors.New("flypg: malformed bookmark")

// maxBookmarkLen bounds the text ParseBookmark reads.
const maxBookmarkLen = 1024

// IsZero reports whether b names nothing.
func (b Bookmark) IsZero() bool { return len(b.marks) == 0 }

// String returns b's text form: opaque, short, made of letters, digits,
// '.' and '_' only, so it is safe in a cookie, a header, a URL or JSON
// unquoted. The zero Bookmark's is "".
func (b Bookmark) String() string {
	if b.IsZero() {
		return ""
	}
	var s strings.Builder
	s.WriteString("1")
	for _, m := range b.marks {
		s.WriteByte('_')
		s.WriteString(strconv.FormatUint(m.System, 16))
		s.WriteByte('.')
		s.WriteString(strconv.FormatUint(uint64(m.Timeline), 16))
		s.WriteByte('.')
		s.WriteString(strconv.FormatUint(uint64(m.LSN), 16))
		s.WriteByte('.')
		if m.Tag != ([callbacks.TagSize]byte{}) {
			s.WriteString(hex.EncodeToString(m.Tag[:]))
		}
	}
	return s.String()
}

// MarshalText implements encoding.TextMarshaler with String.
func (b Bookmark) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseBookmark.
func (b *Bookmark) UnmarshalText(text []byte) error {
	v, err := ParseBookmark(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// ParseBookmark parses the text of Bookmark.String. The empty text is the
// zero Bookmark. Malformed text returns an error matching ErrBadBookmark.
// Parsing checks the form only: whether a bookmark belongs to the
// database and carries a valid tag is checked where a read relies on it,
// and a bookmark that does not is ignored there.
func ParseBookmark(s string) (Bookmark, error) {
	if s == "" {
		return Bookmark{}, nil
	}
	bad := func(why string) (Bookmark, error) {
		return Bookmark{}, fmt.Errorf("%w: %s", ErrBadBookmark, why)
	}
	if len(s) > maxBookmarkLen {
		return bad(fmt.Sprintf("%d bytes, more than %d", len(s), maxBookmarkLen))
	}
	parts := strings.Split(s, "_")
	if parts[0] != "1" {
		return bad("unknown version")
	}
	if len(parts) < 2 || len(parts)-1 > callbacks.MaxMarks {
		return bad(fmt.Sprintf("%d positions; want 1 to %d", len(parts)-1, callbacks.MaxMarks))
	}
	var b Bookmark
	for _, p := range parts[1:] {
		f := strings.Split(p, ".")
		if len(f) != 4 {
			return bad("a position needs four fields")
		}
		sys, err1 := parseHex(f[0], 64)
		tl, err2 := parseHex(f[1], 32)
		l, err3 := parseHex(f[2], 64)
		if err := errors.Join(err1, err2, err3); err != nil || sys == 0 || l == 0 {
			return bad("a field is not a number")
		}
		m := callbacks.Mark{System: sys, Timeline: uint32(tl), LSN: lsn.LSN(l)}
		switch len(f[3]) {
		case 0:
		case 2 * callbacks.TagSize:
			if _, err := hex.Decode(m.Tag[:], []byte(f[3])); err != nil {
				return bad("the tag is not hex")
			}
		default:
			return bad("the tag has the wrong length")
		}
		if n := len(b.marks); n > 0 && b.marks[n-1].System >= sys {
			return bad("positions out of order")
		}
		b.marks = append(b.marks, m)
	}
	return b, nil
}

// parseHex parses 1 to bits/4 hex digits, nothing else (no sign, no
// prefix).
func parseHex(s string, bits int) (uint64, error) {
	if s == "" || len(s) > bits/4 {
		return 0, strconv.ErrSyntax
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseUint(s, 16, bits)
}

// WithBookmark returns a context carrying a session that starts at b: reads
// under it see everything b names, and writes under it advance it (see
// BookmarkFrom). A zero b starts a session with nothing to wait for yet. If
// ctx carries a session already, b joins it and ctx is returned as it is.
//
// A read under a session, in a replica region, first makes sure the local
// replica has replayed the session's position — with no query at all when
// the replication tracker already knows it has, otherwise through the
// tracker's one shared poll — and if the replica does not get there within
// Config.BookmarkWait, runs on the primary instead. A position of another
// database cluster is ignored; one of another timeline (a failover came
// between) sends the read to the primary.
func WithBookmark(ctx context.Context, b Bookmark) context.Context {
	return callbacks.WithSession(ctx, b.marks...)
}

// BookmarkFrom returns the latest bookmark of ctx's session: the one it
// started with, advanced by every write made under ctx since — forwarded
// statements and transactions (fly.NoAwait ones too: their wait moves to
// the next read that needs it), Call, and writes in the primary region,
// whose commit position is read here, with one query, when the session
// wrote since the last BookmarkFrom. Call it after the transaction
// commits. Without a session it returns the zero Bookmark.
func BookmarkFrom(ctx context.Context) Bookmark {
	s := callbacks.SessionFrom(ctx)
	if s == nil {
		return Bookmark{}
	}
	return Bookmark{marks: s.Marks(ctx)}
}
