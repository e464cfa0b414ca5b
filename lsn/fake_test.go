package lsn

import (
	"context"
	"sync"
	"time"
)

// fakeSource is a Source whose answers the test controls. Each call takes
// latency (virtual time under synctest) and, when gate is set, first waits
// for a value on it.
type fakeSource struct {
	mu      sync.Mutex
	st      Status
	err     error
	latency time.Duration
	gate    chan struct{}
	calls   int
	at      []time.Time // start of each call
}

func newFake(replayed LSN) *fakeSource {
	return &fakeSource{st: Status{Replayed: replayed, InRecovery: true}, latency: 100 * time.Microsecond}
}

func (f *fakeSource) Replay(ctx context.Context, _ LSN) (Status, error) {
	f.mu.Lock()
	f.calls++
	f.at = append(f.at, time.Now())
	gate, lat := f.gate, f.latency
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Status{}, ctx.Err()
		}
	}
	if lat > 0 {
		t := time.NewTimer(lat)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Status{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, f.err
}

func (f *fakeSource) set(replayed LSN) {
	f.mu.Lock()
	f.st.Replayed = replayed
	f.mu.Unlock()
}

func (f *fakeSource) setTimeline(tli uint32) {
	f.mu.Lock()
	f.st.Timeline = tli
	f.mu.Unlock()
}

func (f *fakeSource) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeSource) setRecovery(in bool) {
	f.mu.Lock()
	f.st.InRecovery = in
	f.mu.Unlock()
}

func (f *fakeSource) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeSource) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...)
}
