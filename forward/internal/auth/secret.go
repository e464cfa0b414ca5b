package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// MinSecretLen is the shortest secret accepted, in bytes. HMAC-SHA256 is only
// as strong as its key; 16 random bytes is the floor, 32 is better (e.g.
// `openssl rand -base64 32`).
const MinSecretLen = 16

// signer computes the MAC of one call under one secret.
//
// The secret lives only inside the closure. fmt prints a func as an address
// whatever the verb or nesting depth, so no formatting of a struct holding
// signers can reveal key bytes. A []byte field would not be safe even behind
// a pointer: %#v, or any verb the type does not support (%s on a pointer
// field prints "%!s(*T=&{...})"), dumps the pointee.
type signer func(ts, nonce, fullMethod string) [sha256.Size]byte

// newSigners validates secrets and returns one signer per secret, in order.
func newSigners(secrets []string) ([]signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no secret given")
	}
	out := make([]signer, 0, len(secrets))
	for i, s := range secrets {
		// The length is safe to report; the content never is.
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("secret #%d is %d bytes, need at least %d", i+1, len(s), MinSecretLen)
		}
		key := []byte(s)
		// Keyed HMAC states are reused: hmac.New costs about as much as
		// the MAC itself, and Reset returns a state to "just keyed".
		pool := &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, key)} }}
		out = append(out, func(ts, nonce, fullMethod string) [sha256.Size]byte {
			st := pool.Get().(*macState)
			defer pool.Put(st)
			return st.compute(ts, nonce, fullMethod)
		})
	}
	return out, nil
}

// macState is a keyed HMAC-SHA256 plus a scratch buffer for the message,
// pooled so that computing a MAC does not allocate.
type macState struct {
	h   hash.Hash
	buf []byte
}

// compute returns HMAC-SHA256(key, "v1\n"+ts+"\n"+nonce+"\n"+fullMethod).
// The newline separators make the encoding unambiguous: none of ts, nonce
// (base64url) or a gRPC method name can contain a newline.
func (st *macState) compute(ts, nonce, fullMethod string) [sha256.Size]byte {
	msg := append(st.buf[:0], version1+"\n"...)
	msg = append(msg, ts...)
	msg = append(msg, '\n')
	msg = append(msg, nonce...)
	msg = append(msg, '\n')
	msg = append(msg, fullMethod...)
	st.buf = msg
	st.h.Reset()
	st.h.Write(msg) // hash.Hash.Write never returns an error
	var out [sha256.Size]byte
	st.h.Sum(out[:0])
	return out
}
