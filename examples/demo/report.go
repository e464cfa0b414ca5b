package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/forward"
)

// meter prints one line per HTTP request saying what flypg did for it:
// reads served by the local replica, writes forwarded to the primary
// region and the wait for replication that followed.
//
// flypg reports forwarded writes through Config.OnWrite with the write's
// context, and the handlers pass the request's context to GORM, so each
// event lands in the trace of the request that caused it, however many
// requests run at once. A production app would also export the events as
// metrics (Config.Metrics).
type meter struct {
	out    io.Writer
	region string
	mu     sync.Mutex // one line at a time
}

func newMeter(out io.Writer, region string) *meter {
	return &meter{out: out, region: region}
}

// reqTrace collects what one request did with the database.
type reqTrace struct {
	mu     sync.Mutex
	writes []flypg.WriteEvent
	reads  int
	readIn time.Duration // time in local reads
}

type traceKey struct{}

// onWrite is the replica-region plugin's Config.OnWrite. flypg calls it on
// the goroutine of the statement, so it must be quick.
func (m *meter) onWrite(ctx context.Context, ev flypg.WriteEvent) {
	if t, ok := ctx.Value(traceKey{}).(*reqTrace); ok {
		t.mu.Lock()
		t.writes = append(t.writes, ev)
		t.mu.Unlock()
	}
}

// countReads times the queries db runs for a request. Reads carry the
// request's context (the handlers use r.Context()), so unlike writes they
// can be attributed without help. In the replica region every query of
// this app is served by the local replica: flypg forwards only writes,
// locking reads and explicit flypg.UsePrimary statements, which it has
// none of.
func (m *meter) countReads(db *gorm.DB) error {
	const startKey = "demo:read_start"
	before := func(tx *gorm.DB) { tx.Statement.Settings.Store(startKey, time.Now()) }
	after := func(tx *gorm.DB) {
		t, ok := tx.Statement.Context.Value(traceKey{}).(*reqTrace)
		v, started := tx.Statement.Settings.LoadAndDelete(startKey)
		if !ok || !started {
			return
		}
		took := time.Since(v.(time.Time))
		t.mu.Lock()
		t.reads++
		t.readIn += took
		t.mu.Unlock()
	}
	cb := db.Callback()
	for _, err := range []error{
		cb.Query().Before("gorm:query").Register("demo:read_start", before),
		cb.Query().After("gorm:query").Register("demo:read_end", after),
		cb.Row().Before("gorm:row").Register("demo:read_start", before),
		cb.Row().After("gorm:row").Register("demo:read_end", after),
	} {
		if err != nil {
			return fmt.Errorf("register read timing callbacks: %w", err)
		}
	}
	return nil
}

// wrap serves each request through next with a trace in its context, and
// prints its line.
func (m *meter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := &reqTrace{}

		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), traceKey{}, t)))
		took := time.Since(start)

		t.mu.Lock()
		line := t.describe(took)
		t.mu.Unlock()
		region := m.region
		if rest, ok := strings.CutPrefix(r.URL.Path, "/regions/"); ok {
			region, _, _ = strings.Cut(rest, "/") // the page's requests name their region
		}
		m.mu.Lock()
		fmt.Fprintf(m.out, "[%s] %-26s %d  %s\n", region, r.Method+" "+r.URL.Path, sw.status, line)
		m.mu.Unlock()
	})
}

// describe says in words what flypg did for a request that took took.
func (t *reqTrace) describe(took time.Duration) string {
	switch {
	case len(t.writes) == 0 && t.reads == 0:
		return "no database work, " + ms(took)
	case len(t.writes) == 0 && t.reads == 1:
		return "read served locally " + ms(took)
	case len(t.writes) == 0:
		return fmt.Sprintf("%d reads served locally %s", t.reads, ms(took))
	}
	var parts []string
	for _, ev := range t.writes {
		what := "write"
		switch ev.Op {
		case "call":
			what = "function call"
		case "commit":
			what = "transaction"
		}
		s := fmt.Sprintf("%s forwarded %s (%s)", what, ms(ev.Forward), roundTrips(ev.RPCs))
		switch {
		case ev.Err == nil && ev.NoAwait:
			s += ", did not wait for replication"
		case ev.Err == nil:
			s += ", waited for replication " + ms(ev.Wait)
		case errors.Is(ev.Err, flypg.ErrReplicationTimeout):
			s += ", committed but the replica was still behind after " + ms(ev.Wait)
		default:
			s += ", failed: " + reason(ev.Err)
		}
		parts = append(parts, s)
	}
	switch t.reads {
	case 0:
	case 1:
		parts = append(parts, "1 read served locally "+ms(t.readIn))
	default:
		parts = append(parts, fmt.Sprintf("%d reads served locally %s", t.reads, ms(t.readIn)))
	}
	parts = append(parts, "total "+ms(took))
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func roundTrips(n int) string {
	if n == 1 {
		return "1 round trip"
	}
	return fmt.Sprintf("%d round trips", n)
}

// reason says in a few words why a forwarded write failed.
func reason(err error) string {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		return "PostgreSQL refused it: " + pgErr.Message
	case errors.Is(err, forward.ErrUnavailable):
		return "the primary region is unreachable, nothing was sent"
	case errors.Is(err, forward.ErrInDoubt):
		return "the reply was lost, the outcome is unknown"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:77] + "..." // one line per request
	}
	return s
}

// statusWriter remembers the status code a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
