package main

// The end-to-end check is `go run ./examples/demo -selftest`, which needs
// PostgreSQL; these tests cover the parts that do not.

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
)

func TestDecodeJSON(t *testing.T) {
	type in struct {
		Name string `json:"name"`
	}
	for _, c := range []struct {
		body   string
		status int // 0: accepted
	}{
		{`{"name":"a"}`, 0},
		{" {\"name\":\"a\"}\n", 0},
		{``, http.StatusBadRequest},
		{`{"name":`, http.StatusBadRequest},
		{`{"name":"a"} {"name":"b"}`, http.StatusBadRequest},
		{`{"name":"a"} x`, http.StatusBadRequest},
		{`{"name":"a","extra":1}`, http.StatusBadRequest},
		{`["a"]`, http.StatusBadRequest},
		{`{"name":"` + strings.Repeat("x", maxBodyBytes) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
		var v in
		ok := decodeJSON(w, r, &v)
		if c.status == 0 {
			if !ok || v.Name != "a" {
				t.Errorf("%.40q: refused (%d %s) or wrong value %+v", c.body, w.Code, w.Body, v)
			}
			continue
		}
		if ok || w.Code != c.status || !strings.Contains(w.Body.String(), `"error"`) {
			t.Errorf("%.40q: got ok=%v %d %s, want %d with a JSON error", c.body, ok, w.Code, w.Body, c.status)
		}
	}
}

func TestPathID(t *testing.T) {
	for _, c := range []struct {
		id   string
		want uint
		ok   bool
	}{
		{"1", 1, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false}, // beyond bigint
		{"0", 0, false},
		{"-1", 0, false},
		{"abc", 0, false},
		{"", 0, false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetPathValue("id", c.id)
		w := httptest.NewRecorder()
		got, ok := pathID(w, r)
		if got != c.want || ok != c.ok {
			t.Errorf("pathID(%q) = %d, %v; want %d, %v", c.id, got, ok, c.want, c.ok)
		}
		if !ok && w.Code != http.StatusBadRequest {
			t.Errorf("pathID(%q): status %d, want 400", c.id, w.Code)
		}
	}
}

func TestCleanText(t *testing.T) {
	if got, err := cleanText("name", "  milk \n"); err != nil || got != "milk" {
		t.Errorf("cleanText trims: got %q, %v", got, err)
	}
	for _, bad := range []string{"", "   ", "a\x00b", "tab\there", strings.Repeat("é", maxTextRunes+1), "\xff"} {
		if _, err := cleanText("name", bad); err == nil {
			t.Errorf("cleanText(%.20q) accepted", bad)
		}
	}
	if _, err := cleanText("name", strings.Repeat("é", maxTextRunes)); err != nil {
		t.Errorf("cleanText refused %d runes: %v", maxTextRunes, err)
	}
}

func TestDescribe(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		t    *reqTrace
		want string
	}{
		{&reqTrace{}, "no database work, 1.0 ms"},
		{&reqTrace{reads: 1, readIn: ms / 2}, "read served locally 1.0 ms"},
		{&reqTrace{reads: 2}, "2 reads served locally 1.0 ms"},
		{
			&reqTrace{writes: []flypg.WriteEvent{{Op: "create", Forward: 41 * ms, Wait: ms / 2, RPCs: 1}}},
			"write forwarded 41.0 ms (1 round trip), waited for replication 0.5 ms, total 1.0 ms",
		},
		{
			&reqTrace{writes: []flypg.WriteEvent{{Op: "update", Forward: 40 * ms, RPCs: 1}}, reads: 1, readIn: ms / 4},
			"write forwarded 40.0 ms (1 round trip), waited for replication 0.0 ms, 1 read served locally 0.2 ms, total 1.0 ms",
		},
		{
			&reqTrace{writes: []flypg.WriteEvent{{Op: "call", Forward: 40 * ms, RPCs: 1, NoAwait: true}}},
			"function call forwarded 40.0 ms (1 round trip), did not wait for replication, total 1.0 ms",
		},
		{
			&reqTrace{writes: []flypg.WriteEvent{{Op: "commit", Forward: 80 * ms, RPCs: 2, Err: &forward.Error{Kind: forward.ErrUnavailable}}}},
			"transaction forwarded 80.0 ms (2 round trips), failed: the primary region is unreachable, nothing was sent, total 1.0 ms",
		},
		{
			&reqTrace{writes: []flypg.WriteEvent{{Op: "create", Forward: 40 * ms, Wait: 5 * time.Second, RPCs: 1, Err: timeoutErr{}}}},
			"write forwarded 40.0 ms (1 round trip), committed but the replica was still behind after 5000.0 ms, total 1.0 ms",
		},
	} {
		if got := c.t.describe(ms); got != c.want {
			t.Errorf("describe:\n got %s\nwant %s", got, c.want)
		}
	}
}

// timeoutErr matches flypg.ErrReplicationTimeout, as a ReplicationError
// whose wait timed out does.
type timeoutErr struct{}

func (timeoutErr) Error() string        { return "replication wait timed out" }
func (timeoutErr) Is(target error) bool { return target == flypg.ErrReplicationTimeout }
