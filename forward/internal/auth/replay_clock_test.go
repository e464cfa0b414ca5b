package auth

import (
	"testing"
	"time"
)

// TestReplayCacheClockSteps: a step of the server's wall clock neither makes
// the cache forget a nonce that the timestamp check would still accept, nor
// locks every caller out until real time catches up with the step.
func TestReplayCacheClockSteps(t *testing.T) {
	const window = int64(2 * time.Minute)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	c := newReplayCache(100)
	nonce := func(b byte) (n [nonceLen]byte) { n[0] = b; return n }

	// A header admitted at t0 (monotonic 0).
	if r := c.admit(nonce(1), t0+window, t0, 0); r != replayOK {
		t.Fatalf("first header: %v", r)
	}
	// The wall clock jumps an hour ahead; one second passed for real.
	stepped := t0 + int64(time.Hour)
	if r := c.admit(nonce(2), stepped+window, stepped, int64(time.Second)); r != replayOK {
		t.Fatalf("header while the clock is ahead: %v", r)
	}
	// The clock is corrected: two seconds after t0 for real.
	now := t0 + int64(2*time.Second)
	mono := int64(2 * time.Second)
	if r := c.admit(nonce(3), now+window, now, mono); r != replayOK {
		t.Fatalf("a fresh header after the clock was corrected: %v, want it admitted", r)
	}
	// The first header is still inside its window: its replay is caught.
	if r := c.admit(nonce(1), t0+window, now, mono); r != replaySeen {
		t.Fatalf("replay of a header still in its window after the clock step: %v, want replaySeen", r)
	}
	// Past the window on both clocks it is forgotten.
	later := t0 + 3*window
	if r := c.admit(nonce(4), later+window, later, 3*window); r != replayOK {
		t.Fatalf("a header much later: %v", r)
	}
	if n := c.len(); n != 2 {
		t.Fatalf("%d nonces held, want the two whose wall-clock expiry has not passed", n)
	}
}
