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
type replayCache struct {
	mu      sync.Mutex
	max     int
	seen    map[[nonceLen]byte]struct{}
	expiry  expiryHeap
	horizon int64 // the latest "now" swept up to, unix nanoseconds
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
// the server's current time (unix ns).
func (c *replayCache) admit(nonce [nonceLen]byte, expires, now int64) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()

	// Sweep first so that expired entries never count against the limit.
	// Each entry is popped once, so this is O(log n) amortised per call.
	for len(c.expiry) > 0 && c.expiry[0].expires < now {
		e := heap.Pop(&c.expiry).(expiryEntry)
		delete(c.seen, e.nonce)
	}
	if now > c.horizon {
		c.horizon = now
	}
	if expires < c.horizon {
		return replayBehindHorizon
	}
	if _, dup := c.seen[nonce]; dup {
		return replaySeen
	}
	if len(c.seen) >= c.max {
		return replayFull
	}
	c.seen[nonce] = struct{}{}
	heap.Push(&c.expiry, expiryEntry{expires: expires, nonce: nonce})
	return replayOK
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

type expiryEntry struct {
	expires int64
	nonce   [nonceLen]byte
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
