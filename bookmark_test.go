package flypg

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/lsn"
)

func TestBookmarkText(t *testing.T) {
	signer := callbacks.NewSigner(bookmarkKey("bookmark-test-secret-0123456789"))
	one := Bookmark{marks: []callbacks.Mark{signer.Sign(callbacks.Mark{System: 7311, Timeline: 2, LSN: lsn.MustParse("1/A0")})}}
	two := Bookmark{marks: []callbacks.Mark{{System: 1, Timeline: 1, LSN: 5}, {System: 9, LSN: 6}}}
	for _, b := range []Bookmark{{}, one, two} {
		got, err := ParseBookmark(b.String())
		if err != nil || got.String() != b.String() {
			t.Fatalf("round trip of %q: %q, %v", b, got, err)
		}
		if strings.ContainsFunc(b.String(), func(r rune) bool {
			return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '.' || r == '_')
		}) {
			t.Fatalf("%q has characters unsafe in a cookie", b)
		}
		j, err := json.Marshal(map[string]Bookmark{"b": b})
		if err != nil {
			t.Fatal(err)
		}
		var back map[string]Bookmark
		if err := json.Unmarshal(j, &back); err != nil || back["b"].String() != b.String() {
			t.Fatalf("JSON round trip of %q: %s, %v", b, j, err)
		}
	}
	if !signer.Check(one.marks[0]) || signer.Check(two.marks[0]) {
		t.Fatal("signer accepted an unsigned mark or refused its own")
	}
	tampered := one.marks[0]
	tampered.LSN++
	if signer.Check(tampered) {
		t.Fatal("signer accepted a tampered mark")
	}

	for _, bad := range []string{
		"x", "2_1.1.1.", "1", "1_", "1_1.1.1", "1_1.1.1.1.", "1_0.1.1.", "1_1.1.0.", "1_-1.1.1.",
		"1_1.1.+1.", "1_11111111111111111.1.1.", "1_1.111111111.1.", "1_1.1.1.zz",
		"1_1.1.1." + strings.Repeat("0", 30), "1_2.1.1._1.1.1.", "1_1.1.1._1.1.2.",
		"1_1.1.1._2.1.1._3.1.1._4.1.1._5.1.1._6.1.1._7.1.1._8.1.1._9.1.1.",
		"1_1.1.1." + strings.Repeat("a", 2000),
	} {
		if _, err := ParseBookmark(bad); !errors.Is(err, ErrBadBookmark) {
			t.Errorf("ParseBookmark(%q) = %v, want ErrBadBookmark", bad, err)
		}
	}
}

func TestBookmarkSession(t *testing.T) {
	ctx := context.Background()
	if !BookmarkFrom(ctx).IsZero() {
		t.Fatal("a bookmark without a session")
	}
	a := Bookmark{marks: []callbacks.Mark{{System: 1, Timeline: 1, LSN: 100}}}
	b := Bookmark{marks: []callbacks.Mark{{System: 1, Timeline: 1, LSN: 50}, {System: 2, Timeline: 3, LSN: 7}}}
	sctx := WithBookmark(ctx, a)
	if again := WithBookmark(sctx, b); again != sctx {
		t.Fatal("WithBookmark on a session started another")
	}
	if got, want := BookmarkFrom(sctx).String(), "1_1.1.64._2.3.7."; got != want {
		t.Fatalf("merged bookmark %q, want %q", got, want)
	}
	// A later timeline wins over a higher position.
	WithBookmark(sctx, Bookmark{marks: []callbacks.Mark{{System: 1, Timeline: 2, LSN: 1}}})
	s := callbacks.SessionFrom(sctx)
	v := s.Version()
	if got, want := BookmarkFrom(sctx).String(), "1_1.2.1._2.3.7."; got != want {
		t.Fatalf("after a failover %q, want %q", got, want)
	}
	// A write whose position is unknown sends reads to the primary until
	// the session writes again.
	s.Touch("db", func(context.Context) callbacks.Mark {
		return callbacks.Mark{System: 2, Timeline: 3, LSN: callbacks.UnknownLSN}
	})
	if s.Version() == v {
		t.Fatal("Touch did not change the version")
	}
	if got := BookmarkFrom(sctx).marks[1].LSN; got != callbacks.UnknownLSN {
		t.Fatalf("unknown position became %s", got)
	}
	s.Advance(callbacks.Mark{System: 2, Timeline: 3, LSN: 9})
	if got := BookmarkFrom(sctx).marks[1].LSN; got != 9 {
		t.Fatalf("a write after an unknown position: %s", got)
	}
}
