package callbacks

import (
	"strings"
	"sync"
)

// The safety net: a statement the routing rules left on the local replica
// that the replica refuses as read-only (it writes through a function the
// rules do not know, uses a sequence, NOTIFY, a temporary or unlogged
// table) runs once on the primary, and its shape is logged once, so that
// the application's author can route it (flypg.UsePrimary) and save the
// refused attempt.

// maxShapes bounds the shapes remembered for logging once each.
const maxShapes = 1024

// shapes remembers the statement shapes the safety net has logged.
type shapes struct {
	mu   sync.Mutex
	seen map[string]struct{}
	full bool
}

// first reports whether shape is seen for the first time; once maxShapes
// are remembered, only the first shape past them reports true.
func (s *shapes) first(shape string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[shape]; ok {
		return false
	}
	if len(s.seen) >= maxShapes {
		was := s.full
		s.full = true
		return !was
	}
	if s.seen == nil {
		s.seen = map[string]struct{}{}
	}
	s.seen[shape] = struct{}{}
	return true
}

// safetyNetLog logs, at warning level and once per statement shape, that
// the replica refused query and that it runs on the primary.
func (r *Router) safetyNetLog(query string, err error) {
	shape := statementShape(query)
	if r.Logger == nil || !r.shapes.first(shape) {
		r.debug("flypg: safety net: statement refused by the replica runs on the primary", "shape", shape)
		return
	}
	r.Logger.Warn("flypg: safety net: the local replica refused a statement as read-only; it runs on the primary. Route it there (flypg.UsePrimary) to save the refused attempt; logged once per statement shape",
		"shape", shape, "err", err)
}

// maxShapeWords bounds the words of a shape.
const maxShapeWords = 48

// statementShape is query without its values and layout: its words in
// lower case, parentheses, and "?" for each string constant and for each
// run of numbers and parameters ($1) between them (operators are dropped),
// so that statements differing only in their values share a shape.
func statementShape(query string) string {
	s := sqlScanner{src: query}
	var b strings.Builder
	add := func(w string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	for n := 0; n < maxShapeWords; n++ {
		from := s.pos
		tok, word := s.next()
		gap := query[from:s.pos]
		switch tok {
		case sqlTokWord:
			gap = gap[:len(gap)-len(word)]
		case sqlTokLParen, sqlTokRParen, sqlTokSemicolon:
			gap = gap[:len(gap)-1]
		case sqlTokString, sqlTokQuotedName:
			gap = ""
		}
		if strings.ContainsAny(gap, "0123456789") {
			add("?")
		}
		switch tok {
		case sqlTokEOF, sqlTokInvalid:
			return b.String()
		case sqlTokWord:
			word = strings.ToLower(word)
		case sqlTokQuotedName:
			word = `"` + word + `"`
		case sqlTokString:
			word = "?"
		case sqlTokLParen:
			word = "("
		case sqlTokRParen:
			word = ")"
		case sqlTokSemicolon:
			word = ";"
		}
		add(word)
	}
	b.WriteString(" ...")
	return b.String()
}
