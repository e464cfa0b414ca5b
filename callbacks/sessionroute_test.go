package callbacks

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/lsn"
)

// fakeReplica is a replica whose replay position the test sets.
type fakeReplica struct {
	replayed atomic.Uint64
	looks    atomic.Int64
}

func (f *fakeReplica) Replay(ctx context.Context, _ lsn.LSN) (lsn.Status, error) {
	f.looks.Add(1)
	return lsn.Status{Replayed: lsn.LSN(f.replayed.Load()), InRecovery: true}, nil
}

func TestReadsOnPrimary(t *testing.T) {
	rep := &fakeReplica{}
	rep.replayed.Store(1000)
	tr, err := lsn.NewTracker(lsn.Config{Source: rep, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Wait(context.Background(), 1000); err != nil { // the tracker learns 1000
		t.Fatal(err)
	}
	signer := NewSigner([]byte("key"))
	var timeline atomic.Uint32
	timeline.Store(2)
	var fresh atomic.Int32
	s := &Sessions{System: 42, Signer: signer, Bound: 20 * time.Millisecond,
		Timeline: func(_ context.Context, f bool) uint32 {
			if f {
				fresh.Add(1)
			}
			return timeline.Load()
		}}
	r := &Router{Tracker: tr, Sessions: s}
	mark := func(tl uint32, l lsn.LSN) Mark { return signer.Sign(Mark{System: 42, Timeline: tl, LSN: l}) }

	cases := []struct {
		name    string
		marks   []Mark
		primary bool
		looks   bool // the read made the tracker look
		fresh   bool // the timeline was read again
	}{
		{"no session", nil, false, false, false},
		{"replayed already", []Mark{mark(2, 900)}, false, false, false},
		{"behind past the bound", []Mark{mark(2, 5000)}, true, true, false},
		{"unknown position", []Mark{mark(2, UnknownLSN)}, true, false, false},
		{"older timeline", []Mark{mark(1, 900)}, true, false, false},
		{"newer timeline", []Mark{mark(3, 900)}, true, false, true},
		{"unknown timeline", []Mark{mark(0, 900)}, false, false, false},
		{"foreign", []Mark{{System: 7, Timeline: 2, LSN: 5000}}, false, false, false},
		{"forged", []Mark{{System: 42, Timeline: 2, LSN: 5000}}, false, false, false},
		{"tampered", []Mark{func() Mark { m := mark(2, 900); m.LSN = 5000; return m }()}, false, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			if c.marks != nil {
				ctx = WithSession(ctx, c.marks...)
			}
			looks, f := rep.looks.Load(), fresh.Load()
			primary, why := r.sessionOnPrimary(ctx)
			if primary != c.primary {
				t.Fatalf("primary %v (%s), want %v", primary, why, c.primary)
			}
			if got := rep.looks.Load() != looks; got != c.looks {
				t.Errorf("tracker looked: %v, want %v", got, c.looks)
			}
			if got := fresh.Load() != f; got != c.fresh {
				t.Errorf("timeline read again: %v, want %v", got, c.fresh)
			}
		})
	}
	st := s.Stats()
	if st.Foreign != 1 || st.Invalid != 2 || st.Satisfied != 2 || st.Primary != 4 {
		t.Fatalf("stats %+v", st)
	}

	// A replica that catches up within the bound serves the read.
	s.Bound = time.Minute
	ctx := WithSession(context.Background(), mark(2, 2000))
	done := make(chan bool, 1)
	go func() {
		p, _ := r.sessionOnPrimary(ctx)
		done <- p
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return s.Stats().Reads != st.Reads }, "the read to wait")
	rep.replayed.Store(2000)
	if <-done {
		t.Fatal("a replica that caught up within the bound: read on the primary")
	}
	if got := s.Stats().Waited; got != st.Waited+1 {
		t.Fatalf("waited %d", got)
	}
}
