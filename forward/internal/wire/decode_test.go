package wire

import (
	"math"
	"strings"
	"testing"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/proto"
)

func arr(kind forwardpb.Array_Kind, elems ...*forwardpb.Value) *forwardpb.Value {
	return arrayValue(kind, elems)
}

func TestDecodeArgMalformed(t *testing.T) {
	tm := func(tt *forwardpb.Time) *forwardpb.Value {
		return &forwardpb.Value{Kind: &forwardpb.Value_Time{Time: tt}}
	}
	nested := arr(forwardpb.Array_KIND_INT64, int64Value(1))
	for range maxArrayDims {
		nested = arr(forwardpb.Array_KIND_ARRAY, nested)
	}
	tests := []struct {
		name string
		in   *forwardpb.Value
		want string
	}{
		{"nil value", nil, "value without kind"},
		{"no kind", &forwardpb.Value{}, "value without kind"},
		{"nil time", tm(nil), "time without value"},
		{"negative nanos", tm(&forwardpb.Time{Nanos: -1}), "nanos -1 out of range"},
		{"too many nanos", tm(&forwardpb.Time{Nanos: 1e9}), "out of range"},
		{"huge offset", tm(&forwardpb.Time{Offset: 90000}), "offset 90000 out of range"},
		{"UTC with offset", tm(&forwardpb.Time{Utc: true, Offset: 3600}), "UTC time with offset"},
		{"nil array", &forwardpb.Value{Kind: &forwardpb.Value_Array{}}, "array without value"},
		{"unknown array kind", arr(99, int64Value(1)), "unknown array element kind 99"},
		{"mixed kinds", arr(forwardpb.Array_KIND_INT64, int64Value(1), textValue("x")), "element 1"},
		{"scalar in unspecified array", arr(forwardpb.Array_KIND_UNSPECIFIED, int64Value(1)), "element 0"},
		{"array in scalar array", arr(forwardpb.Array_KIND_TEXT, arr(forwardpb.Array_KIND_TEXT)), "element 0"},
		{"scalar in array of arrays", arr(forwardpb.Array_KIND_ARRAY, textValue("x")), "in array of arrays"},
		{"kind-less element", arr(forwardpb.Array_KIND_BOOL, &forwardpb.Value{}), "element 0"},
		{"nil element", arr(forwardpb.Array_KIND_BOOL, nil), "element 0"},
		{"int32 out of range", arr(forwardpb.Array_KIND_INT32, int64Value(math.MaxInt32+1)), "out of range"},
		{"int16 out of range", arr(forwardpb.Array_KIND_INT16, int64Value(math.MinInt16-1)), "out of range"},
		{"negative uint64", arr(forwardpb.Array_KIND_UINT64, int64Value(-1)), "out of range"},
		{"duration in array", arr(forwardpb.Array_KIND_INT64, &forwardpb.Value{Kind: &forwardpb.Value_Duration{Duration: 1}}), "element 0"},
		{"bad time in array", arr(forwardpb.Array_KIND_TIME, tm(&forwardpb.Time{Nanos: -5})), "nanos -5"},
		{"too many dimensions", nested, "more than 6 dimensions"},
		{"ragged depth", arr(forwardpb.Array_KIND_ARRAY,
			arr(forwardpb.Array_KIND_INT64, int64Value(1)),
			arr(forwardpb.Array_KIND_ARRAY, arr(forwardpb.Array_KIND_INT64, int64Value(1)))), "different depths"},
		{"ragged", arr(forwardpb.Array_KIND_ARRAY,
			arr(forwardpb.Array_KIND_INT64, int64Value(1)),
			arr(forwardpb.Array_KIND_INT64, int64Value(1), int64Value(2))), "ragged array"},
		{"ragged with NULL row", arr(forwardpb.Array_KIND_ARRAY,
			arr(forwardpb.Array_KIND_INT64, int64Value(1)), nullValue()), "ragged array"},
		{"ragged deeper", arr(forwardpb.Array_KIND_ARRAY,
			arr(forwardpb.Array_KIND_ARRAY, arr(forwardpb.Array_KIND_INT64, int64Value(1))),
			arr(forwardpb.Array_KIND_ARRAY, arr(forwardpb.Array_KIND_INT64))), "ragged array"},
		{"inner kinds differ", arr(forwardpb.Array_KIND_ARRAY,
			arr(forwardpb.Array_KIND_INT64, int64Value(1)),
			arr(forwardpb.Array_KIND_TEXT, textValue("a"))), "inner arrays of kinds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeArg(tt.in)
			if err == nil {
				t.Fatalf("DecodeArg = %#v, want an error", got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeArgNested(t *testing.T) {
	// An inner array of NULLs takes the kind of its siblings, and a NULL
	// in any leaf makes every leaf a slice of pointers.
	in := arr(forwardpb.Array_KIND_ARRAY,
		arr(forwardpb.Array_KIND_UNSPECIFIED, nullValue()),
		arr(forwardpb.Array_KIND_INT64, int64Value(7)))
	got, err := DecodeArg(in)
	if err != nil {
		t.Fatal(err)
	}
	seven := int64(7)
	want := [][]*int64{{nil}, {&seven}}
	if !same(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

func TestDecodeArgs(t *testing.T) {
	got, err := DecodeArgs([]*forwardpb.Value{int64Value(1), textValue("a")})
	if err != nil || len(got) != 2 || got[0] != int64(1) || got[1] != "a" {
		t.Errorf("DecodeArgs = %v, %v", got, err)
	}
	_, err = DecodeArgs([]*forwardpb.Value{int64Value(1), {}})
	if err == nil || err.Error() != "wire: argument 2: value without kind" {
		t.Errorf("error = %v", err)
	}
}

var fuzzParamOIDs = []uint32{
	pgtype.BoolOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float4OID,
	pgtype.Float8OID, pgtype.TextOID, pgtype.ByteaOID, pgtype.UUIDOID, pgtype.JSONOID, pgtype.JSONBOID,
	pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.DateOID, pgtype.TimeOID, pgtype.IntervalOID, pgtype.InetOID,
	pgtype.Int4ArrayOID, pgtype.Int8ArrayOID, pgtype.TextArrayOID, pgtype.Float4ArrayOID, pgtype.ByteaArrayOID,
	pgtype.TimestamptzArrayOID, pgtype.NumericArrayOID, pgtype.BoolArrayOID, 0, 99999,
}

// FuzzDecodeArg decodes arbitrary protobuf messages: DecodeArg must never
// panic, whatever it accepts must be encodable again, and pgx must be able
// to take it as an argument of any type without panicking.
func FuzzDecodeArg(f *testing.F) {
	seeds := []any{
		nil, true, int64(-1), uint64(math.MaxUint64), 1.5, float32(2.5), "s", []byte("b"),
		[]int64{1}, []*string{nil}, [][]int32{{1, 2}, {3, 4}}, [][]byte{nil, {}},
		[]uint64{1, math.MaxUint64}, []any{nil},
	}
	for _, s := range seeds {
		pv, err := EncodeArg(s)
		if err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(pv)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v forwardpb.Value
		if err := proto.Unmarshal(data, &v); err != nil {
			return
		}
		got, err := DecodeArg(&v)
		if err != nil {
			return
		}
		if _, err := EncodeArg(got); err != nil {
			t.Errorf("decoded %#v but cannot encode it again: %v", got, err)
		}
		// The executor hands the value to pgx, which must not panic on
		// it, whatever the parameter type (errors are fine).
		m := pgtype.NewMap()
		for _, oid := range fuzzParamOIDs {
			for _, format := range []int16{pgtype.TextFormatCode, pgtype.BinaryFormatCode} {
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("pgx panicked encoding %#v into OID %d format %d: %v", got, oid, format, r)
						}
					}()
					_, _ = m.Encode(oid, format, got, nil)
				}()
			}
		}
	})
}
