package wire

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/flypg/flypg/forward/forwardpb"
)

// countByReflection counts the Value messages of an unmarshalled message.
func countByReflection(m protoreflect.Message) int {
	n := 0
	if m.Descriptor().FullName() == valueName {
		n++
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := 0; i < v.List().Len(); i++ {
				n += countByReflection(v.List().Get(i).Message())
			}
		case fd.IsMap():
		case fd.Kind() == protoreflect.MessageKind:
			n += countByReflection(v.Message())
		}
		return true
	})
	return n
}

func nullArray(n int) *forwardpb.Value {
	a := &forwardpb.Array{ElemKind: forwardpb.Array_KIND_INT64}
	for range n {
		a.Elems = append(a.Elems, &forwardpb.Value{Kind: &forwardpb.Value_Null{Null: &forwardpb.Null{}}})
	}
	return &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: a}}
}

func TestCountValues(t *testing.T) {
	nested := &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: forwardpb.Array_KIND_ARRAY,
		Elems: []*forwardpb.Value{nullArray(3), nullArray(4)}}}}
	stmt := &forwardpb.Statement{Sql: "SELECT $1, $2, $3", Args: []*forwardpb.Value{{Kind: &forwardpb.Value_Text{Text: "x"}}, nullArray(10), nested}}
	for _, m := range []proto.Message{
		&forwardpb.ExecRequest{Unit: &forwardpb.Unit{RequestId: make([]byte, 16)}, Statement: stmt},
		&forwardpb.SessionRequest{Seq: 9, Exec: &forwardpb.ExecRequest{Statement: stmt}, Headers: map[string]string{"traceparent": "00-x"}},
		&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Begin{Begin: &forwardpb.TxBegin{First: stmt}}},
		&forwardpb.TxRequest{Op: &forwardpb.TxRequest_Last{Last: stmt}},
		&forwardpb.ExecRequest{},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want := countByReflection(m.ProtoReflect())
		got, err := CountValues(b, m.ProtoReflect().Descriptor(), 1000)
		if err != nil || got != want {
			t.Errorf("%T: CountValues = %d, %v; want %d", m, got, err, want)
		}
		if want > 2 {
			// It stops as soon as the limit is passed.
			if got, err := CountValues(b, m.ProtoReflect().Descriptor(), 2); err != nil || got != 3 {
				t.Errorf("%T with limit 2: %d, %v; want 3", m, got, err)
			}
		}
	}
}

func TestCountValuesDepthAndMalformed(t *testing.T) {
	v := nullArray(1)
	for range MaxValueDepth {
		v = &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: forwardpb.Array_KIND_ARRAY, Elems: []*forwardpb.Value{v}}}}
	}
	b, _ := proto.Marshal(&forwardpb.Statement{Args: []*forwardpb.Value{v}})
	desc := (&forwardpb.Statement{}).ProtoReflect().Descriptor()
	if _, err := CountValues(b, desc, 1<<20); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("deep nesting: %v, want ErrTooDeep", err)
	}
	for _, junk := range [][]byte{{0xff}, {0x12, 0x05, 0x01}, {0x12}} {
		if _, err := CountValues(junk, desc, 10); err == nil {
			t.Errorf("%x: no error", junk)
		}
	}
}
