package fly

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// URLConfig says where the app runs.
type URLConfig struct {
	Region        string // this instance's region
	PrimaryRegion string // where the primary database lives
	Production    bool   // rewrite only in production; otherwise the URL is returned unchanged
}

// Fly Postgres conventions the rewrite follows.
const (
	// urlReplicaPort is the port on which every Fly Postgres member serves
	// itself, replica or not; 5432 is the proxy that always leads to the
	// primary.
	urlReplicaPort = "5433"
	// urlTop1 asks Fly's internal DNS for the nearest instance of an app,
	// which for a database in a replica region is the local replica.
	urlTop1 = "top1.nearest.of."
	// urlTop2 is what "fly postgres attach" writes into DATABASE_URL.
	urlTop2 = "top2.nearest.of."
	// urlFlycast marks Fly's private load-balanced addresses, which choose
	// the instance themselves.
	urlFlycast = ".flycast"
)

// ConfigureURL rewrites rawURL for cfg: it is the Go version of
// fly_postgres's config_repo_url, so that an app in a replica region reads
// from its local replica.
//
// Unless cfg.Production is set, rawURL is returned unchanged and is not even
// parsed: local set-ups often rely on the driver's defaults (an empty string,
// PGHOST), which this function could not rewrite anyway.
//
// In production, cfg.Region and cfg.PrimaryRegion must be set, and:
//
//   - the host is rewritten, the first matching rule winning: a host
//     containing ".flycast" or "top1.nearest.of." is left as it is;
//     "top2.nearest.of." is replaced by "top1.nearest.of."; any other host
//     name gets "top1.nearest.of." in front of it. The markers are matched
//     without regard to case.
//   - outside the primary region (Region != PrimaryRegion) the port becomes
//     5433, Fly Postgres' direct port, where the nearest instance, the local
//     replica, answers; it is added when the URL has none. In the primary
//     region the port is left as it was.
//
// Everything else (user, password, database, query parameters, their
// percent-encoding or quoting) is kept byte for byte.
//
// rawURL is either a URL (postgres:// or postgresql://, including bracketed
// IPv6 hosts) or a keyword/value string (host=... port=...), parsed by the
// rules libpq and pgx use. In keyword/value form the host and port keywords
// are rewritten, and in a replica region port=5433 is inserted after the
// host when there is no port keyword.
//
// Deviation from the original, which prefixes any host: a host that is an
// IP address is left unchanged (top1.nearest.of.10.0.0.1 would not resolve),
// but the port rule still applies.
//
// Errors: input that cannot be rewritten safely returns an error rather than
// a guess. That covers malformed URLs and keyword/value strings, other
// schemes, a missing or empty host, several hosts, Unix-domain socket hosts,
// hostaddr, and URL query parameters host or port (which would override the
// rewritten authority). Error messages never quote the input, because
// connection strings carry passwords and a malformed one cannot be reliably
// split into the parts that are safe to show.
func ConfigureURL(rawURL string, cfg URLConfig) (string, error) {
	if !cfg.Production {
		return rawURL, nil
	}
	if cfg.Region == "" || cfg.PrimaryRegion == "" {
		return "", urlErrorf("Region and PrimaryRegion must be set in production")
	}
	if rawURL == "" {
		return "", urlErrorf("empty connection string")
	}
	// A NUL would end the string for libpq and split a startup parameter
	// for pgx; nothing sensible can be done with it.
	if strings.IndexByte(rawURL, 0) >= 0 {
		return "", urlErrorf("connection string contains a NUL byte")
	}
	replica := cfg.Region != cfg.PrimaryRegion
	if scheme, ok := urlSchemeOf(rawURL); ok {
		// pgx and libpq only recognise these two prefixes, spelled in lower
		// case; anything else would not reach the database as a URL.
		if scheme != "postgres" && scheme != "postgresql" {
			return "", urlErrorf("unsupported scheme %q (want postgres:// or postgresql://)", scheme)
		}
		return urlRewriteURI(rawURL, len(scheme)+len("://"), replica)
	}
	return urlRewriteKeywordValue(rawURL, replica)
}

// urlErrorf builds ConfigureURL's errors. Callers must not pass any part of
// the connection string as an argument.
func urlErrorf(format string, args ...any) error {
	return fmt.Errorf("fly: configure URL: "+format, args...)
}

// urlSchemeOf returns the scheme of s if s starts with scheme "://".
func urlSchemeOf(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			if strings.HasPrefix(s[i:], "://") {
				return s[:i], true
			}
			return "", false
		default:
			return "", false
		}
	}
	return "", false
}

// urlRewriteURI rewrites a postgres:// URL whose authority starts at
// authStart. It splits the URL the way libpq's conninfo_uri_parse_options
// (and pgx) do, not the way net/url does: the user information ends at the
// first '@' before any '/', and '#' has no special meaning, so a password
// with a '#' or '?' is the driver's password here too.
func urlRewriteURI(raw string, authStart int, replica bool) (string, error) {
	hostStart := authStart
	if i := strings.IndexAny(raw[authStart:], "@/"); i >= 0 && raw[authStart+i] == '@' {
		user, password, _ := strings.Cut(raw[authStart:authStart+i], ":")
		if _, ok := urlDecode(user); !ok {
			return "", urlErrorf("invalid percent-encoding or space in the user name")
		}
		if _, ok := urlDecode(password); !ok {
			return "", urlErrorf("invalid percent-encoding or space in the password")
		}
		hostStart = authStart + i + 1
	}

	// Host: a bracketed IPv6 address, or everything up to ':', '/', '?' or
	// ','.
	hostEnd := hostStart
	bracketed := strings.HasPrefix(raw[hostStart:], "[")
	if bracketed {
		end := strings.IndexByte(raw[hostStart:], ']')
		if end < 0 {
			return "", urlErrorf(`unterminated "[" in the host`)
		}
		hostEnd = hostStart + end + 1
	} else {
		end := strings.IndexAny(raw[hostStart:], ":/?,")
		if end < 0 {
			end = len(raw) - hostStart
		}
		hostEnd = hostStart + end
	}

	// Optional port, up to '/', '?' or ','.
	portStart, portEnd := -1, hostEnd
	if hostEnd < len(raw) && raw[hostEnd] == ':' {
		portStart = hostEnd + 1
		end := strings.IndexAny(raw[portStart:], "/?,")
		if end < 0 {
			end = len(raw) - portStart
		}
		portEnd = portStart + end
	}
	if portEnd < len(raw) {
		switch raw[portEnd] {
		case '/', '?':
		case ',':
			return "", urlErrorf("several hosts are not supported; give the single Fly Postgres host")
		default: // only after "]"
			return "", urlErrorf(`unexpected character after the IPv6 address (want ":", "/" or "?")`)
		}
	}
	if err := urlCheckPathAndQuery(raw[portEnd:]); err != nil {
		return "", err
	}

	hostText := raw[hostStart:hostEnd]
	inner := hostText
	if bracketed {
		inner = hostText[1 : len(hostText)-1]
	}
	host, ok := urlDecode(inner)
	if !ok {
		return "", urlErrorf("invalid percent-encoding or space in the host")
	}
	newHost, changed, err := urlRewriteHost(host, bracketed)
	if err != nil {
		return "", err
	}
	if !changed {
		newHost = hostText // keep the original spelling
	}

	var port string
	switch {
	case portStart >= 0:
		port = raw[portStart:portEnd]
		if err := urlCheckPort(port); err != nil {
			return "", err
		}
		if replica {
			port = urlReplicaPort
		}
		port = ":" + port
	case replica:
		port = ":" + urlReplicaPort
	}
	return raw[:hostStart] + newHost + port + raw[portEnd:], nil
}

// urlCheckPathAndQuery validates what follows a URL's authority, "/dbname"
// and "?key=value&...", as libpq parses it, without changing it. A host or
// port query parameter would override the rewritten authority in libpq and
// pgx, so it is refused.
func urlCheckPathAndQuery(rest string) error {
	if strings.HasPrefix(rest, "/") {
		db, _, _ := strings.Cut(rest[1:], "?")
		if _, ok := urlDecode(db); !ok {
			return urlErrorf("invalid percent-encoding or space in the database name")
		}
	}
	_, query, _ := strings.Cut(rest, "?")
	// Like libpq, "&" separates pairs and a trailing "&" ends the list.
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		rawKey, rawValue, found := strings.Cut(pair, "=")
		if !found || strings.Contains(rawValue, "=") {
			return urlErrorf(`each query parameter needs exactly one "="`)
		}
		key, ok := urlDecode(rawKey)
		if !ok {
			return urlErrorf("invalid percent-encoding or space in a query parameter name")
		}
		if _, ok := urlDecode(rawValue); !ok {
			return urlErrorf("invalid percent-encoding or space in a query parameter value")
		}
		switch key {
		case "host", "hostaddr", "port":
			return urlErrorf("query parameter %q overrides the URL's host or port and cannot be rewritten; put the host and port before the path", key)
		}
	}
	return nil
}

// urlDecode percent-decodes a URL component like libpq's
// conninfo_uri_decode: "%" and two hex digits, %00 forbidden, spaces only
// around the value. ok is false for anything libpq would reject.
func urlDecode(raw string) (string, bool) {
	raw = strings.Trim(raw, " ")
	if strings.IndexByte(raw, ' ') >= 0 {
		return "", false
	}
	if strings.IndexByte(raw, '%') < 0 {
		return raw, true
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		if raw[i] != '%' {
			b.WriteByte(raw[i])
			continue
		}
		if i+2 >= len(raw) {
			return "", false
		}
		hi, ok1 := urlHexDigit(raw[i+1])
		lo, ok2 := urlHexDigit(raw[i+2])
		if !ok1 || !ok2 || hi == 0 && lo == 0 {
			return "", false
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), true
}

// urlHexDigit returns the value of the hex digit c.
func urlHexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// urlCheckPort accepts an empty port (the driver's default) or a TCP port
// number. The message does not quote the text: in a malformed URL the
// "port" is often a piece of the password.
func urlCheckPort(port string) error {
	if port == "" {
		return nil
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return urlErrorf("invalid port (a password with special characters must be percent-encoded)")
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return urlErrorf("port out of range")
	}
	return nil
}

// urlRewriteHost applies the host rules to a decoded host. It returns the
// host to use and whether it differs from host.
func urlRewriteHost(host string, bracketed bool) (string, bool, error) {
	switch {
	case host == "":
		return "", false, urlErrorf("no host")
	case strings.Contains(host, ","):
		return "", false, urlErrorf("several hosts are not supported; give the single Fly Postgres host")
	case host[0] == '/' || host[0] == '@':
		return "", false, urlErrorf("a Unix-domain socket host cannot be routed to a region")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return host, false, nil // prefixing an IP address makes no sense
	}
	if bracketed {
		return "", false, urlErrorf("the bracketed host is not an IPv6 address")
	}
	// Only plain DNS names are rewritten, so the result can be written back
	// into a URL or keyword/value string without escaping.
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false, urlErrorf("the host is neither a DNS name nor an IP address")
		}
	}

	// The host is ASCII now, so lowering keeps byte offsets.
	lower := strings.ToLower(host)
	switch {
	case strings.Contains(lower, urlFlycast), strings.Contains(lower, urlTop1):
		return host, false, nil
	case strings.Contains(lower, urlTop2):
		// Every occurrence, as the original's String.replace does.
		var b strings.Builder
		for {
			i := strings.Index(lower, urlTop2)
			if i < 0 {
				break
			}
			b.WriteString(host[:i])
			b.WriteString(urlTop1)
			host, lower = host[i+len(urlTop2):], lower[i+len(urlTop2):]
		}
		b.WriteString(host)
		return b.String(), true, nil
	default:
		return urlTop1 + host, true, nil
	}
}

// urlKeywordValue is one keyword=value setting, with the position of the
// value's raw text (including quotes) in the connection string.
type urlKeywordValue struct {
	key        string
	value      string // unescaped
	start, end int
	quoted     bool
	// dangling: the unquoted value ends the string with a lone backslash,
	// which libpq drops; text appended after it would be escaped.
	dangling bool
}

// urlParseKeywordValue splits a keyword/value connection string by libpq's
// conninfo_parse rules, as pgx does: keyword, optional spaces, "=", optional
// spaces, then a value that is either single-quoted or runs to the next
// space; a backslash takes the next character literally. Errors give byte
// offsets, never text, because the text may be a password.
func urlParseKeywordValue(s string) ([]urlKeywordValue, error) {
	isSpace := func(c byte) bool {
		return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
	}
	var kvs []urlKeywordValue
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return kvs, nil
		}
		keyStart := i
		for i < len(s) && !isSpace(s[i]) && s[i] != '=' {
			i++
		}
		key := s[keyStart:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) || s[i] != '=' {
			return nil, urlErrorf(`not a postgres:// URL, and no "=" after the keyword at offset %d of the keyword/value string`, keyStart)
		}
		if key == "" {
			return nil, urlErrorf(`empty keyword before "=" at offset %d of the keyword/value string`, i)
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}

		kv := urlKeywordValue{key: key, start: i}
		var value strings.Builder
		if i < len(s) && s[i] == '\'' {
			kv.quoted = true
			i++
			for {
				if i == len(s) {
					return nil, urlErrorf("unterminated quoted value starting at offset %d of the keyword/value string", kv.start)
				}
				c := s[i]
				if c == '\'' {
					i++
					break
				}
				if c == '\\' {
					i++
					if i == len(s) {
						return nil, urlErrorf("unterminated quoted value starting at offset %d of the keyword/value string", kv.start)
					}
					c = s[i]
				}
				value.WriteByte(c)
				i++
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				c := s[i]
				if c == '\\' {
					i++
					if i == len(s) {
						kv.dangling = true
						break
					}
					c = s[i]
				}
				value.WriteByte(c)
				i++
			}
		}
		kv.end = i
		kv.value = value.String()
		kvs = append(kvs, kv)
	}
}

// urlRewriteKeywordValue rewrites the host and port settings of a
// keyword/value connection string, keeping every other byte.
func urlRewriteKeywordValue(s string, replica bool) (string, error) {
	kvs, err := urlParseKeywordValue(s)
	if err != nil {
		return "", err
	}
	type edit struct {
		start, end int
		text       string
	}
	var edits []edit
	hasHost, hasPort := false, false
	hostEnd := 0 // where the last host value ends
	for _, kv := range kvs {
		switch kv.key {
		case "hostaddr":
			return "", urlErrorf("hostaddr pins the server address, so the connection cannot be routed to a region; use host")
		case "host":
			// Every occurrence is rewritten: the driver uses the last one.
			hasHost = true
			hostEnd = kv.end
			host, changed, err := urlRewriteHost(kv.value, false)
			if err != nil {
				return "", err
			}
			// A dangling backslash is dropped with the rewrite, so the port
			// inserted after the host is not escaped into its value.
			if changed || kv.dangling {
				if kv.quoted {
					host = "'" + host + "'"
				}
				edits = append(edits, edit{kv.start, kv.end, host})
			}
		case "port":
			hasPort = true
			if err := urlCheckPort(kv.value); err != nil {
				return "", err
			}
			if replica {
				port := urlReplicaPort
				if kv.quoted {
					port = "'" + port + "'"
				}
				edits = append(edits, edit{kv.start, kv.end, port})
			}
		}
	}
	if !hasHost {
		// Without a host keyword the driver would use PGHOST, a service
		// file or a local socket, none of which this function can see.
		return "", urlErrorf("no host keyword in the keyword/value string")
	}

	if replica && !hasPort {
		// The port goes right after the host value, not at the end: after
		// a trailing empty value ("sslmode=") it would become that value.
		// A quoted host value may be followed directly by the next keyword,
		// hence the trailing space in that case.
		port := " port=" + urlReplicaPort
		if hostEnd < len(s) && !strings.ContainsRune(" \t\n\r\f\v", rune(s[hostEnd])) {
			port += " "
		}
		// Without a port keyword the only edits are host values, none after
		// the last one, so appending keeps edits in order.
		edits = append(edits, edit{hostEnd, hostEnd, port})
	}

	var b strings.Builder
	b.Grow(len(s) + len(urlTop1) + len(" port="+urlReplicaPort+" "))
	last := 0
	for _, e := range edits {
		b.WriteString(s[last:e.start])
		b.WriteString(e.text)
		last = e.end
	}
	b.WriteString(s[last:])
	return b.String(), nil
}
