package flypg

import (
	"bufio"
	"net"
	"net/http"
	"time"

	"github.com/flypg/flypg/callbacks"
)

// The names under which Middleware carries bookmarks.
const (
	BookmarkHeader = "Flypg-Bookmark"
	BookmarkCookie = "flypg_bookmark"
)

// BookmarkCookieMaxAge is the lifetime of the bookmark cookie. Replication
// catches up in far less; past it a bookmark is only a cost.
const BookmarkCookieMaxAge = 5 * time.Minute

// Middleware runs each request under a bookmark session (WithBookmark), so
// that the request's reads, in whatever region it lands, see the writes of
// the requests before it. It reads the bookmark from the request header
// Flypg-Bookmark, else from the cookie flypg_bookmark; a malformed,
// foreign or forged bookmark is ignored (logged at debug level), never an
// error. When the handler wrote, the response carries the new bookmark in
// the header Flypg-Bookmark and the cookie flypg_bookmark (Path=/,
// HttpOnly, SameSite=Lax, Secure over TLS, Max-Age BookmarkCookieMaxAge),
// set just before the response's first byte.
//
// A write made after the handler started its response (wrote a status or
// body bytes, or flushed) cannot reach that response's headers: it is in
// the session (BookmarkFrom(r.Context())), but the client learns it only if
// the handler sends it itself (in the body, say). Write before responding,
// as handlers usually do.
//
// One bookmark names the positions of every database cluster the request
// wrote to, so with several plugins, wrap the handler with any one's
// Middleware: an inner Middleware sees the session of an outer one and
// passes the request through.
func (p *Plugin) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if callbacks.SessionFrom(r.Context()) != nil {
			next.ServeHTTP(w, r) // an outer Middleware carries the session
			return
		}
		b := p.requestBookmark(r)
		ctx := WithBookmark(r.Context(), b)
		r = r.WithContext(ctx)
		bw := &bookmarkWriter{ResponseWriter: w, r: r, session: callbacks.SessionFrom(ctx)}
		bw.start = bw.session.Version()
		next.ServeHTTP(bw, r)
		bw.begin()
	})
}

// requestBookmark returns the request's bookmark, the zero one if it has
// none or a malformed one.
func (p *Plugin) requestBookmark(r *http.Request) Bookmark {
	text := r.Header.Get(BookmarkHeader)
	if text == "" {
		if c, err := r.Cookie(BookmarkCookie); err == nil {
			text = c.Value
		}
	}
	b, err := ParseBookmark(text)
	if err != nil {
		p.logger().Debug("flypg: malformed bookmark ignored", "err", err)
		return Bookmark{}
	}
	return b
}

// logger is the plugin's logger, also before Initialize.
func (p *Plugin) logger() interface{ Debug(string, ...any) } {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log == nil {
		return nopLogger{}
	}
	return p.log
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}

// bookmarkWriter sets the bookmark header and cookie just before the
// response begins, if the handler wrote by then.
type bookmarkWriter struct {
	http.ResponseWriter
	r       *http.Request
	session *callbacks.Session
	start   uint64
	begun   bool
}

// begin sets the bookmark on the response, once, before its first byte.
func (w *bookmarkWriter) begin() {
	if w.begun {
		return
	}
	w.begun = true
	if w.session.Version() == w.start {
		return // the handler did not write
	}
	text := BookmarkFrom(w.r.Context()).String()
	if text == "" {
		return
	}
	w.Header().Set(BookmarkHeader, text)
	http.SetCookie(w.ResponseWriter, &http.Cookie{
		Name: BookmarkCookie, Value: text, Path: "/",
		MaxAge: int(BookmarkCookieMaxAge / time.Second), HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: w.r.TLS != nil,
	})
}

func (w *bookmarkWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.begin() // not for 1xx informational headers
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *bookmarkWriter) Write(b []byte) (int, error) {
	w.begin()
	return w.ResponseWriter.Write(b)
}

// Flush implements http.Flusher.
func (w *bookmarkWriter) Flush() {
	w.begin()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker.
func (w *bookmarkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.begun = true // the connection is the handler's now
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *bookmarkWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
