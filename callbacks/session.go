package callbacks

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/flypg/flypg/lsn"
)

// TagSize is the length of a Mark's authentication tag.
const TagSize = 16

// MaxMarks bounds the marks of one session: one per database cluster the
// application writes to.
const MaxMarks = 8

// UnknownLSN in a Mark says that a write committed at a position that could
// not be learned: reads under it run on the primary.
const UnknownLSN = ^lsn.LSN(0)

// A Mark names everything committed in one database cluster up to a
// position: the cluster's system identifier, the timeline the position
// belongs to (0: unknown) and the position. Tag authenticates the other
// fields (zero: unsigned).
type Mark struct {
	System   uint64
	Timeline uint32
	LSN      lsn.LSN
	Tag      [TagSize]byte
}

// Signer signs and checks marks with a set of keys: the first signs, every
// one is accepted. Without keys, marks are unsigned and every mark is
// accepted.
type Signer struct {
	keys [][]byte
}

// NewSigner returns a signer for keys (the first signs).
func NewSigner(keys ...[]byte) *Signer { return &Signer{keys: keys} }

func (s *Signer) tag(key []byte, m Mark) [TagSize]byte {
	var buf [8 + 4 + 8]byte
	binary.BigEndian.PutUint64(buf[0:], m.System)
	binary.BigEndian.PutUint32(buf[8:], m.Timeline)
	binary.BigEndian.PutUint64(buf[12:], uint64(m.LSN))
	h := hmac.New(sha256.New, key)
	h.Write(buf[:])
	var t [TagSize]byte
	copy(t[:], h.Sum(nil))
	return t
}

// Sign returns m with its tag.
func (s *Signer) Sign(m Mark) Mark {
	m.Tag = [TagSize]byte{}
	if s != nil && len(s.keys) > 0 {
		m.Tag = s.tag(s.keys[0], m)
	}
	return m
}

// Check reports whether m's tag was made with one of the keys (always
// true without keys).
func (s *Signer) Check(m Mark) bool {
	if s == nil || len(s.keys) == 0 {
		return true
	}
	for _, k := range s.keys {
		t := s.tag(k, m)
		if hmac.Equal(t[:], m.Tag[:]) {
			return true
		}
	}
	return false
}

// markState is what a session knows about one mark.
type markState uint8

const (
	markUnchecked markState = iota // came from outside: check before use
	markValid
	markInvalid
)

type sessionMark struct {
	Mark
	state markState
}

// A Session carries read-your-writes across code paths: reads under it
// first make sure the local replica has replayed its marks, and writes
// under it advance them. Create one with WithSession; it is safe for
// concurrent use.
type Session struct {
	mu      sync.Mutex
	marks   []sessionMark                                      // sorted by System, one per cluster
	pending map[any]func(context.Context) Mark                 // commit positions still to learn, by writer
	version uint64                                             // counts advances
	flags   map[uint64]struct{ foreignSeen, invalidSeen bool } // per reading cluster: counted once
}

type sessionKey struct{}

// WithSession returns ctx carrying a session that starts at marks. If ctx
// carries a session already, marks join it and ctx is returned unchanged:
// nested hand-offs share one session.
func WithSession(ctx context.Context, marks ...Mark) context.Context {
	if s := SessionFrom(ctx); s != nil {
		s.Merge(marks...)
		return ctx
	}
	s := &Session{}
	s.merge(marks, markUnchecked)
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFrom returns the session in ctx, or nil.
func SessionFrom(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// Merge adds marks that came from outside (a bookmark): each is checked
// before a read relies on it.
func (s *Session) Merge(marks ...Mark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.merge(marks, markUnchecked)
}

// Advance records a write this process made at m (signed already).
func (s *Session) Advance(m Mark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.merge([]Mark{m}, markValid)
	s.version++
}

// Touch records a write whose commit position is learned only when the
// session's marks are asked for (Marks): resolve returns it (a Mark at
// UnknownLSN when it could not be learned). One resolve is kept per
// writer, a comparable value naming the database written to.
func (s *Session) Touch(writer any, resolve func(context.Context) Mark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[any]func(context.Context) Mark{}
	}
	s.pending[writer] = resolve
	s.version++
}

// Version counts the writes recorded so far; it changes with every
// Advance and Touch.
func (s *Session) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Marks returns the session's marks, sorted by cluster, first learning the
// commit positions of writes recorded with Touch.
func (s *Session) Marks(ctx context.Context) []Mark {
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, resolve := range pending {
		if m := resolve(ctx); m.System != 0 {
			s.mu.Lock()
			s.merge([]Mark{m}, markValid)
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Mark, 0, len(s.marks))
	for _, m := range s.marks {
		if m.state != markInvalid {
			out = append(out, m.Mark)
		}
	}
	return out
}

// merge keeps, per cluster, the later of two marks: the higher timeline,
// then the higher position. Caller holds mu.
func (s *Session) merge(marks []Mark, st markState) {
	for _, m := range marks {
		i, found := slices.BinarySearchFunc(s.marks, m.System, func(e sessionMark, sys uint64) int {
			switch {
			case e.System < sys:
				return -1
			case e.System > sys:
				return 1
			}
			return 0
		})
		if !found {
			if len(s.marks) >= MaxMarks {
				continue
			}
			s.marks = slices.Insert(s.marks, i, sessionMark{Mark: m, state: st})
			continue
		}
		old := &s.marks[i]
		// A write this process recorded comes after every earlier write of
		// the session, also after one whose position was not learned.
		if old.state == markInvalid || later(m, old.Mark) || st == markValid && old.LSN == UnknownLSN {
			*old = sessionMark{Mark: m, state: st}
		}
	}
}

// later reports whether a names a later point than b of the same cluster.
func later(a, b Mark) bool {
	if a.Timeline != b.Timeline && a.Timeline != 0 && b.Timeline != 0 {
		return a.Timeline > b.Timeline
	}
	return a.LSN > b.LSN
}

// markFor returns the session's mark for cluster system, checking it with
// signer on first use. found is false when the session has no usable mark
// for the cluster; foreign, when it has marks of other clusters only, and
// invalid when the cluster's mark failed its check — each reported once
// per session.
func (s *Session) markFor(system uint64, signer *Signer) (m Mark, found, foreign, invalid bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pending := len(s.pending) > 0
	for i := range s.marks {
		e := &s.marks[i]
		if e.System != system {
			continue
		}
		if e.state == markUnchecked {
			e.state = markInvalid
			if signer.Check(e.Mark) {
				e.state = markValid
			}
		}
		if e.state == markInvalid {
			return Mark{}, false, false, s.once(system, false)
		}
		return e.Mark, true, false, false
	}
	if pending || len(s.marks) == 0 {
		return Mark{}, false, false, false
	}
	return Mark{}, false, s.once(system, true), false
}

// once reports whether the foreign (or invalid) condition for system is
// seen for the first time. Caller holds mu.
func (s *Session) once(system uint64, foreign bool) bool {
	if s.flags == nil {
		s.flags = map[uint64]struct{ foreignSeen, invalidSeen bool }{}
	}
	f := s.flags[system]
	defer func() { s.flags[system] = f }()
	if foreign {
		first := !f.foreignSeen
		f.foreignSeen = true
		return first
	}
	first := !f.invalidSeen
	f.invalidSeen = true
	return first
}
