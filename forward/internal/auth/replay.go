package auth

import (
	"container/heap"
	"sync"
)

// replayCache remembers accepted nonces until their timestamps leave the
// skew window, after which the timestamp check alone rejects them.
//
// Size: an entry for a header with timestamp ts lives until ts+window, and
// ts may be up to window ahead of the server clock, so an entry lives at most
// 2*window (about window when clocks agree). At R calls per second the cache
// holds at most R*2*window entries; with the default window (2 minutes) and
// size (DefaultReplayCacheSize = 1<<20) that is about 4,300 calls/s
// sustained in the worst case and about 8,700 calls/s with synchronised
// clocks. A live entry costs about 64 bytes (map slot plus heap element),
// so a full default cache is about 65 MB. It only grows that large under
// that load, but Go maps do not shrink, so the memory stays after a burst.
//
// Only callers that produced a valid MAC reach the cache, so filling it
// requires the secret. When it is full of live entries the call is refused
// rather than the cache growing without bound.
//
// Expiry needs both clocks: an entry is dropped only once its timestamp is
// out of the window by the wall clock (which the timestamp check uses) and
// its remaining validity has also passed on the monotonic clock. A wall
// clock stepped forward therefore forgets nothing early, and stepped back
// it locks nobody out: horizon only ever holds expiries of entries actually
// dropped, never a "now" read from a clock that was ahead.
type replayCache struct {
	mu      sync.Mutex
	max     int
	seen    map[[nonceLen]byte]struct{}
	expiry  expiryHeap
	horizon int64 // the latest wall expiry of a dropped entry, unix nanoseconds
}

type replayResult int

const (
	replayOK replayResult = iota
	replaySeen
	replayFull
	// replayBehindHorizon: the entry would already have been swept, so the
	// cache cannot vouch for it. Only happens when the server clock steps
	// backwards after having swept with a later time.
	replayBehindHorizon
)

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: make(map[[nonceLen]byte]struct{})}
}

// admit records nonce, valid until expires (unix ns), if it is new. now is
// the server's current wall time (unix ns), mono a reading of its monotonic
// clock (ns since any fixed point).
func (c *replayCache) admit(nonce [nonceLen]byte, expires, now, mono int64) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()

	// Sweep first so that expired entries never count against the limit.
	// Each entry is popped once, so this is O(log n) amortised per call.
	for len(c.expiry) > 0 && c.expiry[0].expires < now && c.expiry[0].monoExpires < mono {
		e := heap.Pop(&c.expiry).(expiryEntry)
		delete(c.seen, e.nonce)
		c.horizon = max(c.horizon, e.expires)
	}
	if expires <= c.horizon {
		return replayBehindHorizon
	}
	if _, dup := c.seen[nonce]; dup {
		return replaySeen
	}
	if len(c.seen) >= c.max {
		return replayFull
	}
	c.seen[nonce] = struct{}{}
	heap.Push(&c.expiry, expiryEntry{expires: expires, monoExpires: mono + (expires - now), nonce: nonce})
	return replayOK
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

type expiryEntry struct {
	expires     int64 // wall clock
	monoExpires int64 // monotonic clock
	nonce       [nonceLen]byte
}

// expiryHeap is a min-heap on expires, for container/heap.
type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
