// Package secret handles the secrets of flypg's configuration: it renders
// configuration for logs and error messages without them (shared secrets
// are masked whole, connection strings keep everything but their
// passwords) and reads lists of them from the environment.
package secret

import (
	"fmt"
	"net/url"
	"strings"
)

// Mask replaces a secret.
const Mask = "[redacted]"

// Redact returns Mask for a secret that is set and "" for one that is not,
// so that a log still shows whether it is.
func Redact(s string) string {
	if s == "" {
		return ""
	}
	return Mask
}

// RedactAll masks each of ss (nil stays nil).
func RedactAll(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Redact(s)
	}
	return out
}

// passwordKeys are the connection parameters whose values are secrets.
var passwordKeys = map[string]bool{"password": true, "sslpassword": true}

// RedactDSN returns a PostgreSQL connection string (URL or keyword/value form)
// with its passwords masked. What it cannot parse it masks whole.
func RedactDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return urlDSN(dsn)
	}
	return keywordDSN(dsn)
}

func urlDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return Mask
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Mask)
	}
	if q := u.Query(); len(q) > 0 {
		for k := range q {
			if passwordKeys[strings.ToLower(k)] {
				q.Set(k, Mask)
			}
		}
		u.RawQuery = q.Encode()
	}
	s, err := url.PathUnescape(u.String()) // keep the mask readable
	if err != nil {
		return Mask
	}
	return s
}

// keywordDSN masks the values of password keys in "key=value key='v a l'"
// form, following libpq's quoting (single quotes, backslash escapes).
func keywordDSN(dsn string) string {
	var b strings.Builder
	s := dsn
	for {
		trimmed := strings.TrimLeft(s, " \t\n\r")
		b.WriteString(s[:len(s)-len(trimmed)])
		s = trimmed
		if s == "" {
			return b.String()
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return Mask
		}
		key := strings.TrimSpace(s[:eq])
		if key == "" || strings.ContainsAny(key, " \t'\\") {
			return Mask
		}
		b.WriteString(s[:eq+1])
		s = s[eq+1:]
		lead := len(s) - len(strings.TrimLeft(s, " \t"))
		b.WriteString(s[:lead])
		s = s[lead:]
		n, ok := valueLen(s)
		if !ok {
			return Mask
		}
		if passwordKeys[strings.ToLower(key)] {
			b.WriteString(Mask)
		} else {
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
}

// valueLen returns the length of the value at the start of s: quoted up to
// the closing quote, else up to the next space.
func valueLen(s string) (int, bool) {
	if !strings.HasPrefix(s, "'") {
		if i := strings.IndexAny(s, " \t\n\r"); i >= 0 {
			return i, true
		}
		return len(s), true
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '\'':
			return i + 1, true
		}
	}
	return 0, false // unterminated quote
}

// Format prints view, a copy of a configuration value with its secrets
// masked and of a type without Format method, under the verb and flags of
// f; %#v names it typeName instead of the copy's type.
func Format(f fmt.State, verb rune, view any, typeName string) {
	out := fmt.Sprintf(fmt.FormatString(f, verb), view)
	if verb == 'v' && f.Flag('#') {
		out = strings.Replace(out, fmt.Sprintf("%T", view), typeName, 1)
	}
	fmt.Fprint(f, out)
}

// SplitList splits a comma-separated list of secrets (as in
// FLYPG_OLD_SECRETS), ignoring spaces around them and empty entries.
func SplitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Sealed holds a value that no printing reveals: it lives in a closure,
// and fmt prints a func as an address whatever the verb, the nesting or
// the field's visibility (an unexported field of a struct is printed
// without asking its Format method).
type Sealed[T any] struct{ open func() T }

// Seal seals v.
func Seal[T any](v T) Sealed[T] { return Sealed[T]{open: func() T { return v }} }

// Open returns the sealed value (the zero value of a zero Sealed).
func (s Sealed[T]) Open() T {
	if s.open == nil {
		var zero T
		return zero
	}
	return s.open()
}
