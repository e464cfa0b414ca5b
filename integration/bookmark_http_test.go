package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strconv"
	"testing"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
)

// notesApp is a small web app on db: POST /notes creates a note and
// answers its ID, GET /notes/{id} answers 200 if the note is there, 404 if
// not.
func notesApp(db *gorm.DB) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notes", func(w http.ResponseWriter, r *http.Request) {
		n := BmNote{Body: "http"}
		if err := db.WithContext(r.Context()).Create(&n).Error; err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(n.ID)
	})
	mux.HandleFunc("GET /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		var n []BmNote
		if err := db.WithContext(r.Context()).Where("id = ?", r.PathValue("id")).Find(&n).Error; err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if len(n) == 0 {
			http.NotFound(w, r)
		}
	})
	return mux
}

// testBookmarksHTTP runs the notes app in the near and the far region
// behind Middleware: a client that writes in one and reads in the other
// at once sees its write every time, whether it keeps the cookie or hands
// the header back; without either it reads stale.
func testBookmarksHTTP(t *testing.T, e *bmEnv) {
	near := httptest.NewServer(e.nPlug.Middleware(notesApp(e.near)))
	defer near.Close()
	far := httptest.NewServer(e.fPlug.Middleware(notesApp(e.far)))
	defer far.Close()

	// post creates a note in the near region and returns its ID and the
	// response.
	post := func(c *http.Client, header string) (uint, *http.Response) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, near.URL+"/notes", nil)
		if header != "" {
			req.Header.Set(flypg.BookmarkHeader, header)
		}
		resp, err := c.Do(req)
		noErr(t, err)
		defer resp.Body.Close()
		var id uint
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST: %s", resp.Status)
		}
		noErr(t, json.NewDecoder(resp.Body).Decode(&id))
		return id, resp
	}
	// get reads the note in the far region: found or not.
	get := func(c *http.Client, id uint, header string) (bool, *http.Response) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, far.URL+"/notes/"+strconv.Itoa(int(id)), nil)
		if header != "" {
			req.Header.Set(flypg.BookmarkHeader, header)
		}
		resp, err := c.Do(req)
		noErr(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET: %s", resp.Status)
		}
		return resp.StatusCode == http.StatusOK, resp
	}

	t.Run("cookie", func(t *testing.T) {
		jar, err := cookiejar.New(nil)
		noErr(t, err)
		c := &http.Client{Jar: jar}
		for range bookmarkCycles {
			id, resp := post(c, "")
			var cookie *http.Cookie
			for _, ck := range resp.Cookies() {
				if ck.Name == flypg.BookmarkCookie {
					cookie = ck
				}
			}
			if cookie == nil || cookie.Path != "/" || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode ||
				cookie.MaxAge != 300 || cookie.Secure {
				t.Fatalf("bookmark cookie %+v", cookie)
			}
			if found, resp := get(c, id, ""); !found {
				t.Fatalf("the far region missed note %d with the cookie", id)
			} else if len(resp.Cookies()) != 0 || resp.Header.Get(flypg.BookmarkHeader) != "" {
				t.Fatal("a request that wrote nothing set a bookmark")
			}
		}
	})

	t.Run("header", func(t *testing.T) {
		c := &http.Client{}
		for range bookmarkCycles {
			id, resp := post(c, "")
			b := resp.Header.Get(flypg.BookmarkHeader)
			if b == "" {
				t.Fatal("no bookmark header after a write")
			}
			if found, _ := get(c, id, b); !found {
				t.Fatalf("the far region missed note %d with the header", id)
			}
		}
	})

	t.Run("without the bookmark reads stale", func(t *testing.T) {
		c := &http.Client{}
		stale := 0
		for range bookmarkCycles {
			id, _ := post(c, "")
			if found, _ := get(c, id, ""); !found {
				stale++
			}
		}
		if stale == 0 {
			t.Fatal("without the bookmark the far region never read stale: the test proves nothing")
		}
	})

	t.Run("malformed bookmarks are ignored", func(t *testing.T) {
		c := &http.Client{}
		id, resp := post(c, "not a bookmark")
		if resp.Header.Get(flypg.BookmarkHeader) == "" {
			t.Fatal("a write under a malformed bookmark returned none")
		}
		for _, bad := range []string{"garbage", "1_", fmt.Sprintf("1_%x.1.1.00", 7)} {
			get(c, id, bad) // answers 200 or 404, never an error page
			req, _ := http.NewRequest(http.MethodGet, far.URL+"/notes/1", nil)
			req.AddCookie(&http.Cookie{Name: flypg.BookmarkCookie, Value: bad})
			r, err := c.Do(req)
			noErr(t, err)
			r.Body.Close()
			if r.StatusCode >= 500 {
				t.Fatalf("cookie %q: %s", bad, r.Status)
			}
		}
	})
}
