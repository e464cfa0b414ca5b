package main

import (
	_ "embed"
	"log/slog"
	"net/http"
	"time"

	"github.com/flypg/flypg"
)

// page is the demo's web page at /: write in one region, read in another
// at once, with or without the bookmark.
//
//go:embed page.html
var page []byte

// Note is what the page writes: one row per click.
type Note struct {
	ID        uint      `json:"id"`
	Text      string    `json:"text" gorm:"not null"`
	Region    string    `json:"region" gorm:"not null"`
	CreatedAt time.Time `json:"created_at"`
}

// regionRoutes serves, for each of the three regions, the two requests the
// page makes, each through that region's app instance and its flypg
// Middleware (which carries the bookmark in the Flypg-Bookmark header and
// the flypg_bookmark cookie):
//
//	POST /regions/{region}/notes       write a note (no body)
//	GET  /regions/{region}/notes/{id}  read whether the note is there
func regionRoutes(r *regions, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for _, in := range []instance{r.primary, r.near, r.replica} {
		h := &regionApp{in: in, log: log}
		mux.Handle("POST /regions/"+in.region+"/notes", in.plugin.Middleware(http.HandlerFunc(h.write)))
		mux.Handle("GET /regions/"+in.region+"/notes/{id}", in.plugin.Middleware(http.HandlerFunc(h.read)))
	}
	return mux
}

type regionApp struct {
	in  instance
	log *slog.Logger
}

// writeReport is the answer to a write.
type writeReport struct {
	Region string  `json:"region"`
	ID     uint    `json:"id"`
	RanOn  string  `json:"ran_on"`  // "primary": forwarded there, or local in the primary region
	WaitMS float64 `json:"wait_ms"` // waiting for the local replica after the write
	TookMS float64 `json:"took_ms"`
}

func (h *regionApp) write(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	n := Note{Text: "written in " + h.in.region, Region: h.in.region}
	if err := h.in.db.WithContext(r.Context()).Create(&n).Error; err != nil {
		h.log.Error("demo: page request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "the write failed: "+reason(err))
		return
	}
	rep := writeReport{Region: h.in.region, ID: n.ID, RanOn: "primary", TookMS: msFloat(time.Since(start))}
	if t, ok := r.Context().Value(traceKey{}).(*reqTrace); ok {
		t.mu.Lock()
		for _, ev := range t.writes {
			rep.WaitMS += msFloat(ev.Wait)
		}
		t.mu.Unlock()
	}
	writeJSON(w, http.StatusCreated, rep)
}

// readReport is the answer to a read.
type readReport struct {
	Region string  `json:"region"`
	ID     uint    `json:"id"`
	RanOn  string  `json:"ran_on"` // "replica" (the region's own) or "primary"
	Seen   bool    `json:"seen"`   // the note was there
	TookMS float64 `json:"took_ms"`
	// Bookmark is the bookmark the read ran under, "" for none.
	Bookmark string `json:"bookmark"`
}

func (h *regionApp) read(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	start := time.Now()
	// One read says both whether the note is there and where it ran: under
	// a bookmark the local replica has not reached in time, flypg runs it
	// on the primary.
	var res struct {
		InRecovery bool
		Seen       bool
	}
	err := h.in.db.WithContext(r.Context()).
		Raw(`SELECT pg_is_in_recovery() AS in_recovery, EXISTS (SELECT 1 FROM notes WHERE id = ?) AS seen`, id).
		Scan(&res).Error
	if err != nil {
		h.log.Error("demo: page request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "the read failed: "+reason(err))
		return
	}
	rep := readReport{Region: h.in.region, ID: id, RanOn: "primary", Seen: res.Seen, TookMS: msFloat(time.Since(start)),
		Bookmark: flypg.BookmarkFrom(r.Context()).String()}
	if res.InRecovery {
		rep.RanOn = "replica"
	}
	writeJSON(w, http.StatusOK, rep)
}

func servePage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Write(page)
}

func msFloat(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
