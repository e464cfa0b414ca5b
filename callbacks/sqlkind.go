package callbacks

import "strings"

// IsRead reports whether raw SQL (from GORM's db.Raw or db.Exec) can run on a
// hot-standby replica. A false answer sends the statement to the primary,
// which is always correct, only slower; so whenever the text is unusual,
// ambiguous or malformed, IsRead answers false. It never answers true for a
// statement that writes or takes row locks, as far as that can be told from
// the text.
//
// A statement is a read when, after leading whitespace, comments and opening
// parentheses, it starts with SELECT, VALUES, TABLE, SHOW, WITH or EXPLAIN,
// and none of the following appear as whole, unquoted words anywhere in it:
//
//   - INSERT, UPDATE, DELETE or MERGE: data-modifying CTEs
//     (WITH x AS (INSERT ... RETURNING *) SELECT ...) and WITH ... UPDATE;
//     this also rejects FOR UPDATE and FOR NO KEY UPDATE;
//   - FOR SHARE or FOR KEY SHARE: row locks, which only the primary can
//     take;
//   - INTO: SELECT ... INTO creates a table. INTO is rejected anywhere, not
//     only at the top level of a SELECT: in a statement that starts like a
//     read it has no other legal use, so the wider rule costs nothing.
//
// EXPLAIN is a read only when it cannot execute its statement: EXPLAIN
// ANALYZE (or ANALYSE, or an ANALYZE option in the parenthesized option
// list, whatever its value) is not, and the explained statement must itself
// start with SELECT, VALUES, TABLE or WITH.
//
// Several statements separated by semicolons are a read only if each is;
// empty statements (a trailing semicolon) are ignored, but text with no
// statement at all is not a read.
//
// Words are matched case-insensitively and only outside comments (-- and
// nested /* */), string constants ('...', E'...', $$...$$, $tag$...$tag$)
// and double-quoted identifiers, so a column named updated_at or "update"
// does not count. Unquoted words that merely look like keywords do count: a
// column called share after FOR, or an unquoted column named update, makes
// the statement a write. Two more cases are answered false on purpose:
// unterminated strings, identifiers or comments, and a plain '...' string
// containing a backslash, whose extent depends on the server's
// standard_conforming_strings setting and so cannot be known from the text.
//
// A call of a function that writes, that a hot standby refuses, or that
// takes or releases an advisory lock (see PrimaryFunctions) makes the
// statement a non-read, however it starts: SELECT nextval('s'),
// SELECT pg_notify(...), SELECT pg_try_advisory_lock(1). Schema-qualified
// names count by their last part; a quoted name counts only when it is
// spelled exactly (lower case).
//
// Known limitation: functions of your own with side effects called from a
// SELECT look like reads (SELECT my_write_fn()). The text does not say what
// a function does; route such statements to the primary with the override
// clause (db.Clauses(flypg.UsePrimary), which is RoutePrimary).
//
// IsRead makes one pass over sql, uses no regular expressions and does not
// allocate.
func IsRead(sql string) bool {
	s := sqlScanner{src: sql}
	sawStatement := false
	for {
		tok, word, parens := s.nextSkippingParens()
		switch tok {
		case sqlTokEOF:
			// "(" alone, or nothing at all, is not a statement.
			return sawStatement && !parens
		case sqlTokSemicolon:
			if parens {
				return false
			}
			continue // empty statement, e.g. after a trailing ";"
		case sqlTokWord:
		default:
			return false
		}
		switch s.keyword(word) {
		case sqlKwSelect, sqlKwValues, sqlKwTable, sqlKwWith, sqlKwShow:
		case sqlKwExplain:
			if !s.explainIsRead() {
				return false
			}
		default:
			return false
		}
		sawStatement = true
		s.lastTok = sqlTokEOF // a keyword, not a function name
		switch s.scanRest() {
		case sqlTokEOF:
			return true
		case sqlTokSemicolon:
			// Next statement.
		default:
			return false
		}
	}
}

// sqlToken is what sqlScanner.next found. Whitespace, comments, numbers,
// operators and other punctuation are skipped: only the tokens the
// classification looks at are reported.
type sqlToken uint8

const (
	sqlTokEOF        sqlToken = iota
	sqlTokWord                // an unquoted identifier or keyword
	sqlTokQuotedName          // "..."
	sqlTokString              // '...', E'...', $tag$...$tag$
	sqlTokLParen
	sqlTokRParen
	sqlTokSemicolon
	sqlTokInvalid // unterminated, or a string whose extent is ambiguous
)

// sqlKeyword is a word IsRead cares about; everything else is sqlKwNone.
type sqlKeyword uint8

const (
	sqlKwNone sqlKeyword = iota
	sqlKwSelect
	sqlKwValues
	sqlKwTable
	sqlKwWith
	sqlKwShow
	sqlKwExplain
	sqlKwAnalyze // also the spelling ANALYSE
	sqlKwVerbose
	sqlKwInsert
	sqlKwUpdate
	sqlKwDelete
	sqlKwMerge
	sqlKwInto
	sqlKwFor
	sqlKwKey
	sqlKwShare
)

// sqlScanner walks a SQL text once, following PostgreSQL's lexical rules
// closely enough that it never mistakes code for quoted text.
type sqlScanner struct {
	src string
	pos int
	// The two previous words, to recognise FOR SHARE and FOR KEY SHARE.
	prev, prev2 sqlKeyword
	// denied is set when a word made the statement a non-read.
	denied bool
	// The previous token and its text, to recognise function calls.
	lastTok  sqlToken
	lastWord string
}

// keyword classifies word and records it for lock-clause detection. A word
// that writes or locks sets s.denied.
func (s *sqlScanner) keyword(word string) sqlKeyword {
	k := sqlLookupKeyword(word)
	switch k {
	case sqlKwInsert, sqlKwUpdate, sqlKwDelete, sqlKwMerge, sqlKwInto:
		s.denied = true
	case sqlKwShare:
		if s.prev == sqlKwFor || (s.prev == sqlKwKey && s.prev2 == sqlKwFor) {
			s.denied = true
		}
	}
	s.prev2, s.prev = s.prev, k
	return k
}

// scanRest checks the rest of a statement whose first keyword was a read.
// It returns sqlTokEOF or sqlTokSemicolon when the statement ended and is a
// read, and sqlTokInvalid otherwise.
func (s *sqlScanner) scanRest() sqlToken {
	for !s.denied {
		tok, word := s.next()
		switch tok {
		case sqlTokEOF, sqlTokSemicolon:
			return tok
		case sqlTokInvalid:
			return sqlTokInvalid
		case sqlTokWord:
			s.keyword(word)
		case sqlTokLParen:
			if s.call() != sqlFnNone {
				s.denied = true
			}
		}
		s.lastTok, s.lastWord = tok, word
	}
	return sqlTokInvalid
}

// call returns the kind of function called when the "(" just read follows
// a function name.
func (s *sqlScanner) call() sqlFunc {
	switch s.lastTok {
	case sqlTokWord:
		return sqlLookupFunc(s.lastWord, false)
	case sqlTokQuotedName:
		return sqlLookupFunc(s.lastWord, true)
	}
	return sqlFnNone
}

// explainIsRead consumes the options of an EXPLAIN and the first keyword of
// the explained statement, and reports whether the EXPLAIN only plans.
func (s *sqlScanner) explainIsRead() bool {
	tok, word := s.next()
	switch {
	case tok == sqlTokLParen:
		// EXPLAIN (option [value], ...). Any mention of ANALYZE executes the
		// statement unless its value is false; telling those apart is not
		// worth the risk. A quoted option name is an identifier the server
		// compares with "analyze" itself, so it is rejected too.
		for done := false; !done; {
			tok, word = s.next()
			switch tok {
			case sqlTokRParen:
				done = true
			case sqlTokWord:
				if s.keyword(word) == sqlKwAnalyze || s.denied {
					return false
				}
			case sqlTokString:
				// An option value such as FORMAT 'json'.
			default:
				return false
			}
		}
		tok, word = s.next()
	case tok == sqlTokWord:
		// Old syntax: EXPLAIN [ANALYZE] [VERBOSE] statement.
		switch s.keyword(word) {
		case sqlKwAnalyze:
			return false
		case sqlKwVerbose:
			tok, word = s.next()
		}
	}
	for tok == sqlTokLParen {
		tok, word = s.next()
	}
	if tok != sqlTokWord {
		return false
	}
	switch s.keyword(word) {
	case sqlKwSelect, sqlKwValues, sqlKwTable, sqlKwWith:
		return !s.denied
	}
	return false
}

// nextSkippingParens returns the next token that is not "(", and whether any
// "(" was skipped.
func (s *sqlScanner) nextSkippingParens() (tok sqlToken, word string, parens bool) {
	for {
		tok, word = s.next()
		if tok != sqlTokLParen {
			return tok, word, parens
		}
		parens = true
	}
}

// next returns the next token of interest. For sqlTokWord, word is the
// word's text, for sqlTokQuotedName the text between the quotes (doubled
// quotes left as they are); both are substrings of src, so nothing is
// allocated.
func (s *sqlScanner) next() (sqlToken, string) {
	src := s.src
	for s.pos < len(src) {
		c := src[s.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			s.pos++
		case c == '-' && s.pos+1 < len(src) && src[s.pos+1] == '-':
			// A line comment runs to the end of the line. Inside an operator
			// too: PostgreSQL ends an operator where "--" or "/*" begins.
			end := strings.IndexAny(src[s.pos:], "\n\r")
			if end < 0 {
				s.pos = len(src)
			} else {
				s.pos += end + 1
			}
		case c == '/' && s.pos+1 < len(src) && src[s.pos+1] == '*':
			if !s.skipBlockComment() {
				return sqlTokInvalid, ""
			}
		case c == '(':
			s.pos++
			return sqlTokLParen, ""
		case c == ')':
			s.pos++
			return sqlTokRParen, ""
		case c == ';':
			s.pos++
			return sqlTokSemicolon, ""
		case c == '\'':
			s.pos++
			if !s.skipString() {
				return sqlTokInvalid, ""
			}
			return sqlTokString, ""
		case c == '"':
			start := s.pos
			if !s.skipQuotedName() {
				return sqlTokInvalid, ""
			}
			return sqlTokQuotedName, src[start+1 : s.pos-1]
		case c == '$':
			switch s.skipDollar() {
			case sqlDollarString:
				return sqlTokString, ""
			case sqlDollarUnterminated:
				return sqlTokInvalid, ""
			}
		case sqlIsIdentStart(c):
			start := s.pos
			s.pos++
			for s.pos < len(src) && sqlIsIdentCont(src[s.pos]) {
				s.pos++
			}
			// E'...' is an escape string constant: backslash escapes the
			// next character, including a quote. Only a standalone E
			// starts one; "name'x'" is the identifier name then a string.
			if s.pos-start == 1 && (c == 'E' || c == 'e') && s.pos < len(src) && src[s.pos] == '\'' {
				s.pos++
				if !s.skipEscapeString() {
					return sqlTokInvalid, ""
				}
				return sqlTokString, ""
			}
			return sqlTokWord, src[start:s.pos]
		default:
			// Digits, operators, commas, parameters' other bytes: nothing
			// here can hide or form a keyword. Digits are skipped one by
			// one, so "1update" still yields the word "update", as older
			// servers lex it.
			s.pos++
		}
	}
	return sqlTokEOF, ""
}

// skipBlockComment skips a /* */ comment starting at s.pos. PostgreSQL
// block comments nest. It reports false if the comment is unterminated.
func (s *sqlScanner) skipBlockComment() bool {
	src := s.src
	depth := 0
	for i := s.pos; i+1 < len(src); {
		switch {
		case src[i] == '/' && src[i+1] == '*':
			depth++
			i += 2
		case src[i] == '*' && src[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				s.pos = i
				return true
			}
		default:
			i++
		}
	}
	return false
}

// skipString skips the rest of a standard '...' string; s.pos is just past
// the opening quote. A doubled quote is an escaped quote. A backslash makes
// the string's extent depend on standard_conforming_strings (off: \' escapes
// the quote), so such a string is reported as invalid: IsRead then answers
// false rather than guess.
func (s *sqlScanner) skipString() bool {
	src := s.src
	for i := s.pos; i < len(src); i++ {
		switch src[i] {
		case '\\':
			return false
		case '\'':
			if i+1 < len(src) && src[i+1] == '\'' {
				i++
				continue
			}
			s.pos = i + 1
			return true
		}
	}
	return false
}

// skipEscapeString skips the rest of an E'...' string; s.pos is just past
// the opening quote.
func (s *sqlScanner) skipEscapeString() bool {
	src := s.src
	for i := s.pos; i < len(src); i++ {
		switch src[i] {
		case '\\':
			i++ // whatever follows is literal
		case '\'':
			if i+1 < len(src) && src[i+1] == '\'' {
				i++
				continue
			}
			s.pos = i + 1
			return true
		}
	}
	return false
}

// skipQuotedName skips a "..." identifier starting at s.pos; "" inside is
// an escaped quote.
func (s *sqlScanner) skipQuotedName() bool {
	src := s.src
	for i := s.pos + 1; i < len(src); i++ {
		if src[i] == '"' {
			if i+1 < len(src) && src[i+1] == '"' {
				i++
				continue
			}
			s.pos = i + 1
			return true
		}
	}
	return false
}

// sqlDollar is what skipDollar found at a '$'.
type sqlDollar uint8

const (
	sqlDollarOther        sqlDollar = iota // $1, or a stray '$'
	sqlDollarString                        // $$...$$ or $tag$...$tag$
	sqlDollarUnterminated                  // an opening delimiter without its closing one
)

// skipDollar handles a '$' at s.pos: it skips a whole dollar-quoted string,
// or else just the '$'. A '$' inside an identifier (a$$) never gets here:
// the identifier scan consumes it, as PostgreSQL's lexer does.
func (s *sqlScanner) skipDollar() sqlDollar {
	src := s.src
	i := s.pos + 1
	if i < len(src) && sqlIsDollarTagStart(src[i]) {
		i++
		for i < len(src) && sqlIsDollarTagCont(src[i]) {
			i++
		}
	}
	if i >= len(src) || src[i] != '$' {
		s.pos++
		return sqlDollarOther
	}
	delim := src[s.pos : i+1]
	end := strings.Index(src[i+1:], delim)
	if end < 0 {
		return sqlDollarUnterminated
	}
	s.pos = i + 1 + end + len(delim)
	return sqlDollarString
}

// sqlIsIdentStart reports whether c can start an unquoted identifier. Like
// PostgreSQL, every non-ASCII byte counts as a letter.
func sqlIsIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

// sqlIsIdentCont reports whether c can continue an unquoted identifier.
func sqlIsIdentCont(c byte) bool {
	return sqlIsIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

// sqlIsDollarTagStart and sqlIsDollarTagCont follow PostgreSQL's dolq_start
// and dolq_cont: a tag is an identifier without '$'.
func sqlIsDollarTagStart(c byte) bool { return sqlIsIdentStart(c) }

func sqlIsDollarTagCont(c byte) bool {
	return sqlIsIdentStart(c) || c >= '0' && c <= '9'
}

// sqlLookupKeyword maps a word to the keyword IsRead cares about.
func sqlLookupKeyword(w string) sqlKeyword {
	// Switch on length first so most words cost one comparison at most.
	switch len(w) {
	case 3:
		switch {
		case sqlEqualFold(w, "FOR"):
			return sqlKwFor
		case sqlEqualFold(w, "KEY"):
			return sqlKwKey
		}
	case 4:
		switch {
		case sqlEqualFold(w, "WITH"):
			return sqlKwWith
		case sqlEqualFold(w, "SHOW"):
			return sqlKwShow
		case sqlEqualFold(w, "INTO"):
			return sqlKwInto
		}
	case 5:
		switch {
		case sqlEqualFold(w, "TABLE"):
			return sqlKwTable
		case sqlEqualFold(w, "MERGE"):
			return sqlKwMerge
		case sqlEqualFold(w, "SHARE"):
			return sqlKwShare
		}
	case 6:
		switch {
		case sqlEqualFold(w, "SELECT"):
			return sqlKwSelect
		case sqlEqualFold(w, "VALUES"):
			return sqlKwValues
		case sqlEqualFold(w, "INSERT"):
			return sqlKwInsert
		case sqlEqualFold(w, "UPDATE"):
			return sqlKwUpdate
		case sqlEqualFold(w, "DELETE"):
			return sqlKwDelete
		}
	case 7:
		switch {
		case sqlEqualFold(w, "EXPLAIN"):
			return sqlKwExplain
		case sqlEqualFold(w, "ANALYZE"), sqlEqualFold(w, "ANALYSE"):
			return sqlKwAnalyze
		case sqlEqualFold(w, "VERBOSE"):
			return sqlKwVerbose
		}
	}
	return sqlKwNone
}

// sqlEqualFold reports whether w equals upper, an upper-case ASCII keyword of
// the same length, ignoring ASCII case. Unlike strings.EqualFold it does not
// apply Unicode folding, which PostgreSQL does not apply to keywords either
// (so the Kelvin sign does not spell KEY).
func sqlEqualFold(w, upper string) bool {
	for i := 0; i < len(upper); i++ {
		c := w[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != upper[i] {
			return false
		}
	}
	return true
}
