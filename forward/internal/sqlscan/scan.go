package sqlscan

import "strings"

// token is a lexical token of PostgreSQL SQL, as far as Classify needs
// one: words (keywords and identifiers, quoted or not), literals (their
// text dropped) and single punctuation characters.
type token struct {
	text   string
	word   bool
	quoted bool // a "quoted identifier": case-sensitive, never a keyword
}

// is reports whether t is the keyword s (any case) or the punctuation s.
func (t token) is(s string) bool {
	if t.word {
		return !t.quoted && strings.EqualFold(t.text, s)
	}
	return t.text == s
}

// keyword reports whether t is an unquoted word.
func (t token) keyword() bool { return t.word && !t.quoted }

// name is the word as PostgreSQL resolves it: folded to lower case unless
// quoted.
func (t token) name() string {
	if t.quoted {
		return t.text
	}
	return strings.ToLower(t.text)
}

// scanSQL splits sql into statements at semicolons outside literals and
// comments, and calls fn with each statement's tokens (the slice is reused
// between calls).
func scanSQL(sql string, fn func(stmt []token)) {
	var stmt []token
	emit := func(t token) { stmt = append(stmt, t) }
	s := sql
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(s)
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			i = skipBlockComment(s, i)
		case c == '\'':
			// E'...' takes backslash escapes; its E was read as a word.
			escapes := len(stmt) > 0 && stmt[len(stmt)-1].keyword() && strings.EqualFold(stmt[len(stmt)-1].text, "e") && i > 0 && (s[i-1] == 'e' || s[i-1] == 'E')
			if escapes {
				stmt = stmt[:len(stmt)-1]
			}
			i = skipQuoted(s, i, '\'', escapes)
			emit(token{text: "'"})
		case c == '"':
			j := skipQuoted(s, i, '"', false)
			emit(token{text: strings.ReplaceAll(s[i+1:max(i+1, j-1)], `""`, `"`), word: true, quoted: true})
			i = j
		case c == '$' && i+1 < len(s) && isDigit(s[i+1]):
			j := i + 1
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			emit(token{text: "$"})
			i = j
		case c == '$':
			i = skipDollarQuoted(s, i)
			emit(token{text: "'"})
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			emit(token{text: s[i:j], word: true})
			i = j
		case isDigit(c):
			j := i + 1
			for j < len(s) && (isDigit(s[j]) || s[j] == '.' || s[j] == 'e' || s[j] == 'E') {
				j++
			}
			emit(token{text: "0"})
			i = j
		case c == ';':
			fn(stmt)
			stmt = stmt[:0]
			i++
		default:
			emit(token{text: s[i : i+1]})
			i++
		}
	}
	fn(stmt)
}

// skipBlockComment returns the index after the (nested) comment at i.
func skipBlockComment(s string, i int) int {
	depth := 0
	for i < len(s) {
		switch {
		case strings.HasPrefix(s[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(s[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// skipQuoted returns the index after the literal or quoted identifier that
// opens with q at i (doubled q escapes q; with escapes, so does a
// backslash).
func skipQuoted(s string, i int, q byte, escapes bool) int {
	for j := i + 1; j < len(s); j++ {
		switch {
		case escapes && s[j] == '\\':
			j++
		case s[j] == q && j+1 < len(s) && s[j+1] == q:
			j++
		case s[j] == q:
			return j + 1
		}
	}
	return len(s)
}

// skipDollarQuoted returns the index after the dollar-quoted literal
// ($tag$...$tag$) at i, or after the lone $ if it opens none.
func skipDollarQuoted(s string, i int) int {
	j := i + 1
	for j < len(s) && isIdentChar(s[j]) && s[j] != '$' {
		j++
	}
	if j >= len(s) || s[j] != '$' {
		return i + 1
	}
	tag := s[i : j+1]
	if k := strings.Index(s[j+1:], tag); k >= 0 {
		return j + 1 + k + len(tag)
	}
	return len(s)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c >= 0x80
}
func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }
