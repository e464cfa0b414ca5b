package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/flypg/flypg"
)

// selftest drives a scripted session through the HTTP API at base, as a
// client in the replica region would, and checks every answer. Each write
// is read back at once: that it is visible is flypg's read-your-writes.
func selftest(ctx context.Context, base string, r *regions) error {
	start := time.Now()
	fmt.Println("Self-test: a scripted session against the replica-region app")
	s := &session{ctx: ctx, base: base, client: &http.Client{Timeout: 20 * time.Second}}
	before := r.replica.plugin.Stats()

	// Create a list and read it back at once.
	var groceries List
	s.do("POST", "/lists", `{"name":"  Groceries "}`, http.StatusCreated, &groceries)
	s.check(groceries.ID != 0 && groceries.Name == "Groceries", "create list: got %+v", groceries)
	got := s.getList(groceries.ID)
	s.check(got.Name == "Groceries", "read-your-writes: list %d reads back as %+v", groceries.ID, got)

	// Items: create, read back through the list, update, read back.
	var milk, eggs Item
	s.do("POST", path("/lists/%d/items", groceries.ID), `{"title":"milk"}`, http.StatusCreated, &milk)
	s.do("POST", path("/lists/%d/items", groceries.ID), `{"title":"eggs"}`, http.StatusCreated, &eggs)
	s.check(milk.ID != 0 && milk.ListID == groceries.ID && !milk.Done, "create item: got %+v", milk)
	got = s.getList(groceries.ID)
	s.check(len(got.Items) == 2 && got.Items[0].Title == "milk" && got.Items[1].Title == "eggs",
		"read-your-writes: list %d has items %+v, want milk and eggs", groceries.ID, got.Items)

	var updated Item
	s.do("PATCH", path("/items/%d", milk.ID), `{"done":true}`, http.StatusOK, &updated)
	s.check(updated.Done && updated.Title == "milk", "update item: got %+v", updated)
	s.do("PATCH", path("/items/%d", eggs.ID), `{"title":"a dozen eggs"}`, http.StatusOK, &updated)
	s.check(updated.Title == "a dozen eggs" && !updated.Done, "rename item: got %+v", updated)
	var item Item
	s.do("GET", path("/items/%d", milk.ID), "", http.StatusOK, &item)
	s.check(item.Done, "read-your-writes: item %d is not done after the update", milk.ID)

	var renamed List
	s.do("PATCH", path("/lists/%d", groceries.ID), `{"name":"Shopping"}`, http.StatusOK, &renamed)
	s.check(renamed.Name == "Shopping", "rename list: got %+v", renamed)

	// The registered function: move an item to another list, atomically
	// on the primary, then see it moved.
	var done List
	s.do("POST", "/lists", `{"name":"Done"}`, http.StatusCreated, &done)
	var moved struct {
		Item     Item `json:"item"`
		FromList uint `json:"from_list"`
	}
	s.do("POST", path("/items/%d/move", milk.ID), path(`{"list_id":%d}`, done.ID), http.StatusOK, &moved)
	s.check(moved.Item.ListID == done.ID && moved.FromList == groceries.ID, "move: got %+v", moved)
	got = s.getList(done.ID)
	s.check(len(got.Items) == 1 && got.Items[0].ID == milk.ID, "read-your-writes after the move: list %d has %+v", done.ID, got.Items)
	got = s.getList(groceries.ID)
	s.check(len(got.Items) == 1 && got.Items[0].ID == eggs.ID, "after the move list %d still has %+v", groceries.ID, got.Items)

	var lists []listSummary
	s.do("GET", "/lists", "", http.StatusOK, &lists)
	s.check(len(lists) == 2 && lists[0].Items == 1 && lists[1].Items == 1 && lists[1].Done == 1,
		"list summaries: got %+v", lists)

	// The page: write in ams, read at once in syd under the bookmark.
	s.bookmarkAcrossRegions()

	// Read-your-writes when replication is slower than the way back from
	// the primary: the write's answer must wait for the replica.
	s.readYourWritesUnderLag(r, groceries.ID)

	// The primary region out of reach: writes fail cleanly, reads go on.
	s.primaryUnreachable(r, groceries.ID)

	// Deletes.
	s.do("DELETE", path("/items/%d", eggs.ID), "", http.StatusNoContent, nil)
	s.do("GET", path("/items/%d", eggs.ID), "", http.StatusNotFound, nil)
	s.do("DELETE", path("/lists/%d", done.ID), "", http.StatusNoContent, nil)
	s.do("GET", path("/items/%d", milk.ID), "", http.StatusNotFound, nil) // cascaded

	// Errors.
	const missing = 999999
	s.do("GET", path("/lists/%d", done.ID), "", http.StatusNotFound, nil)
	s.do("GET", path("/lists/%d", missing), "", http.StatusNotFound, nil)
	s.do("GET", "/lists/abc", "", http.StatusBadRequest, nil)
	s.do("GET", "/lists/0", "", http.StatusBadRequest, nil)
	s.do("GET", "/nowhere", "", http.StatusNotFound, nil)
	s.do("POST", "/lists", `{"name":`, http.StatusBadRequest, nil)
	s.do("POST", "/lists", ``, http.StatusBadRequest, nil)
	s.do("POST", "/lists", `{"name":"x"} {"name":"y"}`, http.StatusBadRequest, nil)
	s.do("POST", "/lists", `{"name":"   "}`, http.StatusBadRequest, nil)
	s.do("POST", "/lists", `{"name":"x","color":"red"}`, http.StatusBadRequest, nil)
	s.do("POST", "/lists", `{"name":"`+strings.Repeat("x", maxTextRunes+1)+`"}`, http.StatusBadRequest, nil)
	s.do("POST", "/lists", `{"name":"`+strings.Repeat("x", maxBodyBytes)+`"}`, http.StatusRequestEntityTooLarge, nil)
	s.do("POST", path("/lists/%d/items", missing), `{"title":"ghost"}`, http.StatusNotFound, nil)
	s.do("PATCH", path("/items/%d", missing), `{"done":true}`, http.StatusNotFound, nil)
	s.do("PATCH", path("/items/%d", eggs.ID), `{}`, http.StatusBadRequest, nil)
	s.do("DELETE", path("/lists/%d", missing), "", http.StatusNotFound, nil)
	s.do("POST", path("/items/%d/move", missing), path(`{"list_id":%d}`, groceries.ID), http.StatusNotFound, nil)
	s.do("POST", path("/items/%d/move", updated.ID), `{"list_id":0}`, http.StatusBadRequest, nil)

	// The remaining list is empty now.
	got = s.getList(groceries.ID)
	s.check(got.ID == groceries.ID && len(got.Items) == 0, "list %d should be empty, has %+v", groceries.ID, got.Items)

	// The writes really went through flypg, not to the replica (which
	// would have refused them anyway: it is read-only).
	after := r.replica.plugin.Stats()
	s.check(after.Forward.RPCs > before.Forward.RPCs && after.Tracker.Waits > before.Tracker.Waits,
		"flypg forwarded nothing: stats before %+v, after %+v", before, after)

	if s.err != nil {
		return fmt.Errorf("self-test FAILED after %d requests: %w", s.requests, s.err)
	}
	fmt.Printf("Self-test passed: %d requests, %d forwarded round trips, in %.1fs.\n",
		s.requests, after.Forward.RPCs-before.Forward.RPCs, time.Since(start).Seconds())
	return nil
}

// readYourWritesUnderLag slows replication down to well beyond the
// app → executor round trip, writes, and reads back at once.
func (s *session) readYourWritesUnderLag(r *regions, listID uint) {
	if s.err != nil {
		return
	}
	const lag = 300 * time.Millisecond
	if err := r.replicationLink.SetRTT(2 * lag); err != nil {
		s.err = fmt.Errorf("slow replication down: %w", err)
		return
	}
	fmt.Printf("  (replication slowed down to %v one way for the next write)\n", lag)
	t0 := time.Now()
	var bread Item
	s.do("POST", path("/lists/%d/items", listID), `{"title":"bread"}`, http.StatusCreated, &bread)
	took := time.Since(t0)
	var got Item
	s.do("GET", path("/items/%d", bread.ID), "", http.StatusOK, &got)
	s.check(got.Title == "bread", "read-your-writes under replication lag: got %+v", got)
	s.check(took >= lag, "the write answered after %v, before replication (%v one way) could have delivered it: it did not wait", took, lag)
	if err := r.replicationLink.SetRTT(r.rtt); err != nil && s.err == nil {
		s.err = fmt.Errorf("restore replication RTT: %w", err)
	}
	s.do("DELETE", path("/items/%d", bread.ID), "", http.StatusNoContent, nil)
}

// primaryUnreachable cuts the link to the primary region's executor: a
// write fails with 503 and saves nothing, reads are still served by the
// local replica, and writes work again once the link is back.
func (s *session) primaryUnreachable(r *regions, listID uint) {
	if s.err != nil {
		return
	}
	if err := r.executorLink.Cut(); err != nil {
		s.err = fmt.Errorf("cut the executor link: %w", err)
		return
	}
	fmt.Printf("  (link to %s cut: writes cannot reach the primary)\n", primaryRegion)
	s.do("POST", path("/lists/%d/items", listID), `{"title":"lost"}`, http.StatusServiceUnavailable, nil)
	l := s.getList(listID)
	s.check(len(l.Items) == 1, "a failed write left %+v", l.Items)
	if err := r.executorLink.Restore(); err != nil && s.err == nil {
		s.err = fmt.Errorf("restore the executor link: %w", err)
	}
	fmt.Printf("  (link to %s restored)\n", primaryRegion)
	// Reconnecting can take a few seconds (gRPC's reconnect backoff); a
	// write meanwhile fails with 503, which says to try again.
	deadline := time.Now().Add(30 * time.Second)
	var again Item
	for s.err == nil {
		status, err := s.send("POST", path("/lists/%d/items", listID), `{"title":"found"}`, &again)
		if err == nil && status == http.StatusCreated {
			break
		}
		if err != nil || status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			s.err = fmt.Errorf("write after the link came back: status %d: %v %s", status, err, s.last)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.do("DELETE", path("/items/%d", again.ID), "", http.StatusNoContent, nil)
}

// session is a scripted HTTP client that stops at the first failure.
type session struct {
	ctx      context.Context
	base     string
	client   *http.Client
	requests int
	last     []byte // the last answer's body, for messages
	err      error  // the first failure; later steps do nothing
	// bookmark, if set, is sent in the Flypg-Bookmark header;
	// lastBookmark is the one the last answer carried.
	bookmark, lastBookmark string
}

// do sends a request and checks its status; with out set, it decodes the
// JSON answer into it.
func (s *session) do(method, p, body string, want int, out any) {
	if s.err != nil {
		return
	}
	status, err := s.send(method, p, body, out)
	switch {
	case err != nil:
		s.err = err
	case status != want:
		s.err = fmt.Errorf("%s %s: status %d, want %d; body: %s", method, p, status, want, s.last)
	}
}

// send sends a request and returns its status. A success's JSON answer is
// decoded into out (if set); an error's answer must be {"error": "..."}.
func (s *session) send(method, p, body string, out any) (int, error) {
	s.requests++
	req, err := http.NewRequestWithContext(s.ctx, method, s.base+p, strings.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, p, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.bookmark != "" {
		req.Header.Set(flypg.BookmarkHeader, s.bookmark)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	s.lastBookmark = resp.Header.Get(flypg.BookmarkHeader)
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("%s %s: read the answer: %w", method, p, err)
	}
	s.last = bytes.TrimSpace(raw)
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
			return resp.StatusCode, fmt.Errorf("%s %s: error answer is not {\"error\": ...}: %s", method, p, s.last)
		}
		return resp.StatusCode, nil
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode the answer: %w; body: %s", method, p, err, s.last)
		}
	}
	return resp.StatusCode, nil
}

// getList fetches a list with its items into a fresh value, so that a
// field missing from the answer cannot pass for an old one.
func (s *session) getList(id uint) List {
	var l List
	s.do("GET", path("/lists/%d", id), "", http.StatusOK, &l)
	return l
}

// check records a failure unless ok.
func (s *session) check(ok bool, format string, args ...any) {
	if s.err == nil && !ok {
		s.err = fmt.Errorf(format, args...)
	}
}

// path formats a request path or body.
func path(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// bookmarkAcrossRegions does what the page at / does: a write in the near
// region, then at once a read in the far one, carrying the bookmark.
func (s *session) bookmarkAcrossRegions() {
	s.do("GET", "/", "", http.StatusOK, nil)
	s.check(bytes.Contains(s.last, []byte("Write, then read at once")), "GET / is not the page: %.80s", s.last)
	var wrote writeReport
	s.do("POST", "/regions/"+nearRegion+"/notes", "", http.StatusCreated, &wrote)
	s.check(wrote.ID != 0 && s.lastBookmark != "", "a write in %s: %+v, bookmark %q", nearRegion, wrote, s.lastBookmark)
	s.bookmark = s.lastBookmark
	var read readReport
	s.do("GET", path("/regions/%s/notes/%d", replicaRegion, wrote.ID), "", http.StatusOK, &read)
	s.bookmark = ""
	s.check(read.Seen && read.Bookmark != "", "a read in %s under the bookmark of a write in %s: %+v", replicaRegion, nearRegion, read)
}
