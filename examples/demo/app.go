package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
)

// app is the to-do list HTTP API of the replica-region instance. Its
// handlers are plain GORM code: flypg decides where each statement runs.
type app struct {
	db  *gorm.DB // the replica region's database, with the flypg plugin
	log *slog.Logger
}

// Input limits.
const (
	maxBodyBytes = 64 << 10
	maxTextRunes = 200
	maxLists     = 500 // GET /lists returns at most this many
)

// routes returns the app's HTTP handler.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	for _, e := range a.endpoints() {
		mux.HandleFunc(e.pattern, e.handler)
	}
	mux.HandleFunc("GET /{$}", a.index)
	// Anything else: a JSON 404 rather than the mux's plain-text one.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s; GET /api lists them", r.Method, r.URL.Path))
	})
	return mux
}

type endpoint struct {
	pattern string
	about   string
	handler http.HandlerFunc
}

// endpoints is the route table, also served as the index at GET /api.
func (a *app) endpoints() []endpoint {
	return []endpoint{
		{"GET /lists", "every list, with item counts", a.listLists},
		{"POST /lists", `create a list: {"name": "..."}`, a.createList},
		{"GET /lists/{id}", "a list with its items", a.getList},
		{"PATCH /lists/{id}", `rename a list: {"name": "..."}`, a.renameList},
		{"DELETE /lists/{id}", "delete a list and its items", a.deleteList},
		{"POST /lists/{id}/items", `add an item: {"title": "..."}`, a.createItem},
		{"GET /items/{id}", "an item", a.getItem},
		{"PATCH /items/{id}", `change an item: {"title": "...", "done": true}, either or both`, a.updateItem},
		{"DELETE /items/{id}", "delete an item", a.deleteItem},
		{"POST /items/{id}/move", `move an item to another list, atomically on the primary: {"list_id": 2}`, a.moveItem},
	}
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	type entry struct {
		Endpoint string `json:"endpoint"`
		About    string `json:"about"`
	}
	var out []entry
	for _, e := range a.endpoints() {
		out = append(out, entry{e.pattern, e.about})
	}
	writeJSON(w, http.StatusOK, map[string]any{"region": replicaRegion, "endpoints": out})
}

// Lists.

func (a *app) listLists(w http.ResponseWriter, r *http.Request) {
	out := []listSummary{}
	err := a.db.WithContext(r.Context()).Model(&List{}).
		Select("lists.id, lists.name, lists.updated_at, count(items.id) AS items, count(items.id) FILTER (WHERE items.done) AS done").
		Joins("LEFT JOIN items ON items.list_id = lists.id").
		Group("lists.id").Order("lists.id").Limit(maxLists).
		Scan(&out).Error
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *app) createList(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	name, ok := cleanField(w, "name", in.Name)
	if !ok {
		return
	}
	l := List{Name: name}
	// A write: flypg forwards it to the primary region and returns once
	// the local replica has it, so the next GET finds the list.
	if !a.wrote(w, r, a.db.WithContext(r.Context()).Create(&l).Error) {
		return
	}
	writeJSON(w, http.StatusCreated, l)
}

func (a *app) getList(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var l List
	err := a.db.WithContext(r.Context()).
		Preload("Items", func(db *gorm.DB) *gorm.DB { return db.Order("items.id") }).
		First(&l, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("list %d not found", id))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// Always an "items" array, even an empty one (List omits it).
	detail := struct {
		List
		Items []Item `json:"items"`
	}{List: l, Items: l.Items}
	if detail.Items == nil {
		detail.Items = []Item{}
	}
	writeJSON(w, http.StatusOK, detail)
}

func (a *app) renameList(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var in struct {
		Name string `json:"name"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	name, ok := cleanField(w, "name", in.Name)
	if !ok {
		return
	}
	db := a.db.WithContext(r.Context())
	res := db.Model(&List{}).Where("id = ?", id).Update("name", name)
	if !a.wrote(w, r, res.Error) {
		return
	}
	if res.RowsAffected == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("list %d not found", id))
		return
	}
	// Read back from the local replica: flypg waited for the update to
	// arrive there, so this sees the new name.
	var l List
	if err := db.First(&l, id).Error; err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (a *app) deleteList(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	res := a.db.WithContext(r.Context()).Delete(&List{}, id)
	if !a.wrote(w, r, res.Error) {
		return
	}
	if res.RowsAffected == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("list %d not found", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Items.

func (a *app) createItem(w http.ResponseWriter, r *http.Request) {
	listID, ok := pathID(w, r)
	if !ok {
		return
	}
	var in struct {
		Title string `json:"title"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	title, ok := cleanField(w, "title", in.Title)
	if !ok {
		return
	}
	item := Item{ListID: listID, Title: title}
	// No read of the list first: the foreign key checks it on the
	// primary, in the same round trip, and cannot race with a delete.
	err := a.db.WithContext(r.Context()).Create(&item).Error
	if errors.Is(err, gorm.ErrForeignKeyViolated) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("list %d not found", listID))
		return
	}
	if !a.wrote(w, r, err) {
		return
	}
	writeJSON(w, http.StatusCreated, item)
}

func (a *app) getItem(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var item Item
	err := a.db.WithContext(r.Context()).First(&item, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("item %d not found", id))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, item)
}

func (a *app) updateItem(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	// Pointers tell "absent" from false and "".
	var in struct {
		Title *string `json:"title"`
		Done  *bool   `json:"done"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	changes := map[string]any{}
	if in.Title != nil {
		title, ok := cleanField(w, "title", *in.Title)
		if !ok {
			return
		}
		changes["title"] = title
	}
	if in.Done != nil {
		changes["done"] = *in.Done
	}
	if len(changes) == 0 {
		writeError(w, http.StatusBadRequest, `nothing to change: give "title", "done" or both`)
		return
	}
	db := a.db.WithContext(r.Context())
	res := db.Model(&Item{}).Where("id = ?", id).Updates(changes)
	if !a.wrote(w, r, res.Error) {
		return
	}
	if res.RowsAffected == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("item %d not found", id))
		return
	}
	var item Item
	if err := db.First(&item, id).Error; err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, item)
}

func (a *app) deleteItem(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	res := a.db.WithContext(r.Context()).Delete(&Item{}, id)
	if !a.wrote(w, r, res.Error) {
		return
	}
	if res.RowsAffected == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("item %d not found", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// moveItem runs the registered function moveItemFunc on the primary with
// moveItemFn.Call: one round trip to the primary region, then one wait for
// replication.
func (a *app) moveItem(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var in struct {
		ListID uint `json:"list_id"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	if in.ListID == 0 {
		writeError(w, http.StatusBadRequest, `"list_id" must be a positive list id`)
		return
	}
	res, err := moveItemFn.Call(r.Context(), a.db, moveInput{ItemID: id, ToListID: in.ListID})
	var ce *flypg.CallError
	if errors.As(err, &ce) && (ce.Code == codeItemNotFound || ce.Code == codeListNotFound) {
		writeError(w, http.StatusNotFound, ce.Message)
		return
	}
	if !a.wrote(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"item": res.Item, "from_list": res.FromList})
}

// Helpers.

// wrote handles the error of a write and reports whether the handler
// should go on to answer with the written data.
//
// A replication timeout is not a failure: the write committed on the
// primary, only this region's replica has not caught up yet. The answer
// says so in a header, and the next read may still miss the write.
func (a *app) wrote(w http.ResponseWriter, r *http.Request, err error) bool {
	if err == nil {
		return true
	}
	if errors.Is(err, flypg.ErrReplicationTimeout) {
		a.log.Warn("write committed, but the local replica has not replayed it yet", "path", r.URL.Path, "err", err)
		w.Header().Set("Flypg-Replication", "pending")
		return true
	}
	a.fail(w, r, err)
	return false
}

// fail answers a failed database call with the status that fits it.
func (a *app) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, forward.ErrInDoubt):
		// Rare: the reply was lost and the outcome could not be learned.
		writeError(w, http.StatusServiceUnavailable, "the primary region did not confirm the write: it may or may not have been saved")
	case errors.Is(err, forward.ErrUnavailable), errors.Is(err, forward.ErrBusy),
		errors.Is(err, forward.ErrNotPrimary), errors.Is(err, forward.ErrTxAborted):
		writeError(w, http.StatusServiceUnavailable, "the primary region is unavailable; nothing was saved, try again")
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "the database took too long")
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
	default:
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// pathID parses the {id} path segment.
func pathID(w http.ResponseWriter, r *http.Request) (uint, bool) {
	// bitSize 63: ids are PostgreSQL bigints.
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 63)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("id %q is not a positive integer", r.PathValue("id")))
		return 0, false
	}
	return uint(id), true
}

// decodeJSON reads the request body into dst: one JSON object, no unknown
// fields, at most maxBodyBytes. On failure it answers 400 (413 when too
// large) and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", tooBig.Limit))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "empty body: send a JSON object")
	default:
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
	}
	return false
}

// cleanField is cleanText for a request's field: on failure it answers 400
// and reports false.
func cleanField(w http.ResponseWriter, field, s string) (string, bool) {
	v, err := cleanText(field, s)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
	}
	return v, err == nil
}

// cleanText trims s and checks it is a sensible one-line text.
func cleanText(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", fmt.Errorf("%q is required", field)
	case !utf8.ValidString(s):
		return "", fmt.Errorf("%q is not valid UTF-8", field)
	case utf8.RuneCountInString(s) > maxTextRunes:
		return "", fmt.Errorf("%q is longer than %d characters", field, maxTextRunes)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "", fmt.Errorf("%q contains control characters", field)
	}
	return s, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		// Only unencodable types fail; the handlers send none.
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
