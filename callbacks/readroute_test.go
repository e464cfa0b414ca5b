package callbacks

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
)

// availRouter is a Router with a tracker on src, for the availability
// logic alone.
func availRouter(t *testing.T, src lsn.Source) *Router {
	t.Helper()
	tr, err := lsn.NewTracker(lsn.Config{Source: src, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{Tracker: tr, Fallback: true, Source: src, ProbeInterval: time.Millisecond}
	r.avail.init()
	t.Cleanup(func() {
		r.Close()
		tr.Close()
	})
	return r
}

// TestWaitEndsWhenReadsLeave: a write waiting for the local replica
// returns (without error) as soon as reads move to the primary, and its
// LSN is owed: reads come back only once the replica has replayed it.
func TestWaitEndsWhenReadsLeave(t *testing.T) {
	var replayed, up atomic.Int64
	src := lsn.SourceFunc(func(context.Context, lsn.LSN) (lsn.Status, error) {
		if up.Load() == 0 {
			return lsn.Status{}, errors.New("down")
		}
		return lsn.Status{InRecovery: true, Replayed: lsn.LSN(replayed.Load())}, nil
	})
	up.Store(1)
	replayed.Store(100)
	r := availRouter(t, src)
	done := make(chan error, 1)
	go func() {
		_, err := r.Wait(context.Background(), 5000)
		done <- err
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return r.Tracker.Stats().Waiting > 0 }, "the wait to start")
	up.Store(0)
	if !r.leave(ReasonUnreachable, errors.New("down")) {
		t.Fatal("leave: reads were not local")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait after reads left: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end when reads left the replica")
	}
	// Later waits return at once and are owed too.
	if _, err := r.Wait(context.Background(), 6000); err != nil {
		t.Fatal(err)
	}
	// The replica answers but is behind: reads stay on the primary.
	up.Store(1)
	probes := r.ReadStats().Probes
	testkit.Eventually(t, 10*time.Second, func() bool { return r.ReadStats().Probes >= probes+3 }, "three probes of the replica")
	if !r.Mode().Primary {
		t.Fatal("reads came back before the replica replayed what was owed")
	}
	replayed.Store(6000)
	testkit.Eventually(t, 10*time.Second, func() bool { return !r.Mode().Primary }, "reads to come back once the replica replayed what was owed")
}

// TestLookedLeaves: a tracker look that cannot reach the replica moves
// reads to the primary, unless Fallback is off; other failures do not.
func TestLookedLeaves(t *testing.T) {
	src := lsn.SourceFunc(func(context.Context, lsn.LSN) (lsn.Status, error) { return lsn.Status{}, errors.New("down") })
	for _, c := range []struct {
		name     string
		fallback bool
		err      error
		want     bool
	}{
		{"unreachable", true, &lookErr{context.DeadlineExceeded}, true},
		{"off", false, &lookErr{context.DeadlineExceeded}, false},
		{"other", true, errors.New("syntax"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := availRouter(t, src)
			r.ProbeInterval = time.Hour
			r.Fallback = c.fallback
			r.Looked(lsn.Look{Err: c.err})
			if got := r.Mode().Primary; got != c.want {
				t.Errorf("reads on the primary: %v, want %v", got, c.want)
			}
		})
	}
}

type lookErr struct{ err error }

func (e *lookErr) Error() string { return "look: " + e.err.Error() }
func (e *lookErr) Unwrap() error { return e.err }

// TestMaxLag: a write waiting longer than MaxLag for a replica that looks
// show behind moves reads to the primary and returns; a replica whose
// looks do not answer in that time is not called lagging for it.
func TestMaxLag(t *testing.T) {
	behind := lsn.SourceFunc(func(context.Context, lsn.LSN) (lsn.Status, error) {
		return lsn.Status{InRecovery: true, Replayed: 100}, nil
	})
	release := make(chan struct{})
	slow := lsn.SourceFunc(func(ctx context.Context, _ lsn.LSN) (lsn.Status, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return lsn.Status{InRecovery: true, Replayed: 100}, nil
	})
	for _, c := range []struct {
		name string
		src  lsn.Source
		want bool
	}{{"behind", behind, true}, {"slow looks", slow, false}} {
		t.Run(c.name, func(t *testing.T) {
			r := availRouter(t, c.src)
			r.ProbeInterval = time.Hour
			r.MaxLag = 50 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, err := r.Wait(ctx, 5000)
			if got := r.Mode().Primary; got != c.want {
				t.Errorf("reads on the primary: %v, want %v (wait: %v)", got, c.want, err)
			}
			if c.want && err != nil {
				t.Errorf("the wait ended with %v after reads moved to the primary", err)
			}
		})
	}
	close(release)
}
