package executor

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/wire"
)

// limitCodec is the executor's gRPC codec: protobuf, except that a request
// carrying more than maxValues argument values (or nested too deeply) is
// refused from its bytes instead of being unmarshalled, since decoded
// arguments cost many times their encoding.
//
// A codec error would end a whole session or transaction stream and tell
// the client nothing useful, so a refused request is delivered instead as
// an empty message carrying the reason in an unknown field (refusalField),
// which the handler answers like an oversized request: refused, nothing
// ran. Requests that are decoded drop unknown fields, so a client cannot
// forge a refusal on another's behalf.
type limitCodec struct{ maxValues int }

var protoCodec = encoding.GetCodecV2("proto")

// refusalField is the unknown field carrying the codec's refusal: the
// largest field number, which no message of the protocol will ever use.
const refusalField = protowire.MaxValidNumber

func (limitCodec) Name() string { return protoCodec.Name() }

func (limitCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (c limitCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	switch m.(type) {
	case *forwardpb.ExecRequest, *forwardpb.SessionRequest, *forwardpb.TxRequest:
	default:
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	n, err := wire.CountValues(b, m.ProtoReflect().Descriptor(), c.maxValues)
	switch {
	case errors.Is(err, wire.ErrTooDeep):
		refuse(m, b, fmt.Sprintf("arguments nested deeper than %d levels", wire.MaxValueDepth))
		return nil
	case err == nil && n > c.maxValues:
		refuse(m, b, fmt.Sprintf("more than %d argument values, the executor's MaxArgValues", c.maxValues))
		return nil
	}
	return proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, m)
}

// refuse makes m the empty request that carries reason: a statement with
// no arguments for an ExecRequest (also inside a SessionRequest, whose seq
// is kept so that the session can answer it), or a bare TxRequest.
func refuse(m proto.Message, b []byte, reason string) {
	proto.Reset(m)
	mark := func(m proto.Message) {
		r := m.ProtoReflect()
		r.SetUnknown(protowire.AppendString(protowire.AppendTag(nil, refusalField, protowire.BytesType), reason))
	}
	switch m := m.(type) {
	case *forwardpb.ExecRequest:
		m.Statement = &forwardpb.Statement{}
		mark(m)
	case *forwardpb.SessionRequest:
		m.Seq = sessionSeq(b)
		m.Exec = &forwardpb.ExecRequest{Statement: &forwardpb.Statement{}}
		mark(m.Exec)
	default:
		mark(m)
	}
}

// sessionSeq reads the seq field of a SessionRequest's wire form.
func sessionSeq(b []byte) uint64 {
	seqNum := (&forwardpb.SessionRequest{}).ProtoReflect().Descriptor().Fields().ByName("seq").Number()
	var seq uint64
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return seq
		}
		b = b[l:]
		if num == seqNum && typ == protowire.VarintType {
			seq, l = protowire.ConsumeVarint(b)
		} else {
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return seq
		}
		b = b[l:]
	}
	return seq
}

// refusal returns why the codec refused m, or "".
func refusal(m proto.Message) string {
	b := m.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return ""
		}
		b = b[l:]
		if num == refusalField && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return ""
			}
			return string(v)
		}
		if l = protowire.ConsumeFieldValue(num, typ, b); l < 0 {
			return ""
		}
		b = b[l:]
	}
	return ""
}
