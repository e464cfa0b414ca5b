package flypg

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flypg/flypg/callbacks"
	"github.com/flypg/flypg/lsn"
)

// write stands for a write under the request's session.
func write(r *http.Request, at uint64) {
	callbacks.SessionFrom(r.Context()).Advance(callbacks.Mark{System: 1, Timeline: 1, LSN: lsn.LSN(0x100 + at)})
}

// request returns a POST carrying text in the bookmark header or cookie
// named name.
func request(name, text string) func() *http.Request {
	return func() *http.Request {
		r := httptest.NewRequest("POST", "/", nil)
		if name == BookmarkCookie {
			r.AddCookie(&http.Cookie{Name: name, Value: text})
		} else {
			r.Header.Set(name, text)
		}
		return r
	}
}

func TestMiddleware(t *testing.T) {
	p := New(Config{})
	cases := []struct {
		name    string
		req     func() *http.Request
		handler func(w http.ResponseWriter, r *http.Request)
		want    string // the bookmark the response carries; "" none
		secure  bool
	}{
		{"read only", func() *http.Request { return httptest.NewRequest("GET", "/", nil) },
			func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }, "", false},
		{"write then body", func() *http.Request { return httptest.NewRequest("POST", "/", nil) },
			func(w http.ResponseWriter, r *http.Request) { write(r, 1); w.Write([]byte("ok")) }, "1_1.1.101.", false},
		{"write, no body", func() *http.Request { return httptest.NewRequest("POST", "/", nil) },
			func(w http.ResponseWriter, r *http.Request) { write(r, 1) }, "1_1.1.101.", false},
		{"write after the first byte", func() *http.Request { return httptest.NewRequest("POST", "/", nil) },
			func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusAccepted)
				write(r, 1)
			}, "", false},
		{"header bookmark advanced", request(BookmarkHeader, "1_1.1.200._5.1.1."),
			func(w http.ResponseWriter, r *http.Request) { write(r, 0x200) }, "1_1.1.300._5.1.1.", false},
		{"cookie bookmark kept", request(BookmarkCookie, "1_1.1.900."),
			func(w http.ResponseWriter, r *http.Request) { write(r, 1) }, "1_1.1.900.", false},
		{"malformed ignored", request(BookmarkHeader, "garbage"),
			func(w http.ResponseWriter, r *http.Request) { write(r, 1) }, "1_1.1.101.", false},
		{"tls", func() *http.Request {
			r := httptest.NewRequest("POST", "https://example.com/", nil)
			r.TLS = &tls.ConnectionState{}
			return r
		}, func(w http.ResponseWriter, r *http.Request) { write(r, 1); http.Error(w, "x", 400) }, "1_1.1.101.", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			p.Middleware(http.HandlerFunc(c.handler)).ServeHTTP(rec, c.req())
			res := rec.Result()
			if got := res.Header.Get(BookmarkHeader); got != c.want {
				t.Fatalf("header %q, want %q", got, c.want)
			}
			cookies := res.Cookies()
			if c.want == "" {
				if len(cookies) != 0 {
					t.Fatalf("cookies %v without a write", cookies)
				}
				return
			}
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", cookies)
			}
			ck := cookies[0]
			if ck.Name != BookmarkCookie || ck.Value != c.want || ck.Path != "/" || !ck.HttpOnly ||
				ck.SameSite != http.SameSiteLaxMode || ck.MaxAge != int(BookmarkCookieMaxAge.Seconds()) || ck.Secure != c.secure {
				t.Fatalf("cookie %+v", ck)
			}
		})
	}
}

// TestMiddlewareNested: a handler wrapped by two plugins' middleware runs
// under one session, and the response carries the bookmark once.
func TestMiddlewareNested(t *testing.T) {
	p1, p2 := New(Config{}), New(Config{})
	h := p1.Middleware(p2.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { write(r, 1) })))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if got := rec.Result().Header.Values("Set-Cookie"); len(got) != 1 {
		t.Fatalf("Set-Cookie %v, want one", got)
	}
}
