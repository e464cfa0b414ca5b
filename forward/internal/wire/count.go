package wire

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/flypg/flypg/forward/forwardpb"
)

// A decoded argument costs far more memory than its encoding: an array
// element that is NULL takes 4 bytes on the wire and over 100 bytes once
// unmarshalled, so a request within the size limit can still cost tens of
// times its size. CountValues lets a server refuse such a request from its
// bytes, before unmarshalling it.

// MaxValueDepth bounds the nesting of messages CountValues walks (an array
// of arrays takes two levels per dimension; PostgreSQL allows six).
const MaxValueDepth = 64

// ErrTooDeep: the message nests deeper than MaxValueDepth.
var ErrTooDeep = errors.New("arguments nested too deeply")

// errMalformed: the bytes are not a well-formed message; unmarshalling
// says how.
var errMalformed = errors.New("malformed message")

var valueName = (&forwardpb.Value{}).ProtoReflect().Descriptor().FullName()

// CountValues counts the Value messages (statement arguments and array
// elements, at any depth) in b, the wire form of a message of type md,
// stopping as soon as the count exceeds limit. It allocates nothing. An
// error means b is malformed (let unmarshalling report it) or ErrTooDeep.
func CountValues(b []byte, md protoreflect.MessageDescriptor, limit int) (int, error) {
	n := 0
	err := countValues(b, md, limit, 0, &n)
	return n, err
}

func countValues(b []byte, md protoreflect.MessageDescriptor, limit, depth int, n *int) error {
	fields := md.Fields()
	for len(b) > 0 && *n <= limit {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return errMalformed
		}
		b = b[l:]
		if typ != protowire.BytesType {
			if l = protowire.ConsumeFieldValue(num, typ, b); l < 0 {
				return errMalformed
			}
			b = b[l:]
			continue
		}
		v, l := protowire.ConsumeBytes(b)
		if l < 0 {
			return errMalformed
		}
		b = b[l:]
		fd := fields.ByNumber(num)
		if fd == nil || fd.Kind() != protoreflect.MessageKind {
			continue // a string, bytes or unknown field
		}
		sub := fd.Message()
		if sub.FullName() == valueName {
			*n++
		}
		if depth >= MaxValueDepth {
			return ErrTooDeep
		}
		if err := countValues(v, sub, limit, depth+1, n); err != nil {
			return err
		}
	}
	return nil
}
