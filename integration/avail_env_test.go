package integration

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/internal/testkit"
)

// Helpers of the availability tests (avail_*_test.go).

// replicaAppWith opens another replica-region app on e's database, with
// its configuration adjusted by mod.
func (e *env) replicaAppWith(t *testing.T, mod func(*flypg.Config)) (*gorm.DB, *flypg.Plugin) {
	t.Helper()
	db := openGORM(t, e.cluster.Replicas[0].DSN(e.dbname), e.gormOpts)
	cfg := flypg.Config{
		Region: replicaRegion, PrimaryRegion: primaryRegion,
		PrimaryAddr: e.addr, Secret: testkit.Secret, AwaitTimeout: 10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	p := flypg.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return db, p
}

// logRecords is a slog.Handler that keeps the records at or above its
// level, for tests of what flypg logs.
type logRecords struct {
	level slog.Level
	mu    sync.Mutex
	msgs  []string
}

func (h *logRecords) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// containing returns the records whose text contains s.
func (h *logRecords) containing(s string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.msgs {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

// ackedWrites are writers running until stopped, each writing keys
// w<writer>-<n>; they remember which writes were acknowledged, and when.
type ackedWrites struct {
	mu      sync.Mutex
	keys    []string
	at      []time.Time
	lastErr error
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func startWriters(n int, write func(key string) error) *ackedWrites {
	a := &ackedWrites{stop: make(chan struct{})}
	for w := range n {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-a.stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				err := write(key)
				a.mu.Lock()
				if err != nil {
					a.lastErr = err
				} else {
					a.keys, a.at = append(a.keys, key), append(a.at, time.Now())
				}
				a.mu.Unlock()
			}
		}()
	}
	return a
}

// Stop stops the writers and waits for them; it may be called again.
func (a *ackedWrites) Stop() {
	a.once.Do(func() { close(a.stop) })
	a.wg.Wait()
}

// count returns how many writes were acknowledged after t.
func (a *ackedWrites) count(after time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.at {
		if at.After(after) {
			n++
		}
	}
	return n
}

// first returns when the first write after t was acknowledged.
func (a *ackedWrites) first(after time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var first time.Time
	for _, at := range a.at {
		if at.After(after) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

func (a *ackedWrites) lastError() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("last error: %v", a.lastErr)
}

// auditAcked checks that db's fault_writes holds every acknowledged key
// exactly once and no key twice; it returns the number of keys there.
func (a *ackedWrites) audit(t *testing.T, db *gorm.DB) int {
	t.Helper()
	a.Stop()
	var rows []struct {
		Key string
		N   int
	}
	ok(t, db.Raw("SELECT key, count(*) AS n FROM fault_writes GROUP BY key").Scan(&rows))
	have := map[string]int{}
	for _, r := range rows {
		have[r.Key] = r.N
		if r.N > 1 {
			t.Errorf("key %s is on the primary %d times", r.Key, r.N)
		}
	}
	for _, k := range a.keys {
		if have[k] != 1 {
			t.Errorf("acknowledged write %s is on the primary %d times", k, have[k])
		}
	}
	t.Logf("%d writes acknowledged, %d keys on the primary", len(a.keys), len(rows))
	return len(rows)
}
