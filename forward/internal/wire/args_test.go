package wire

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/proto"
)

// roundTrip sends v the way the forwarding path does: EncodeArg on the
// client, the protobuf wire format, DecodeArg on the server.
func roundTrip(t *testing.T, v any) (any, error) {
	t.Helper()
	pv, err := EncodeArg(v)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(&forwardpb.Statement{Args: []*forwardpb.Value{pv}})
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var st forwardpb.Statement
	if err := proto.Unmarshal(b, &st); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return DecodeArg(st.Args[0])
}

type (
	myString   string
	myInt      int32
	myUint     uint64
	myFloat    float32
	myBool     bool
	myDuration time.Duration
	myBytes    []byte
	myUUID     [16]byte
	myInts     []int64
)

// valueValuer has a value receiver: a nil *valueValuer is NULL.
type valueValuer struct{ s string }

func (v valueValuer) Value() (driver.Value, error) { return v.s, nil }

// ptrValuer has a pointer receiver: a nil *ptrValuer is asked anyway.
type ptrValuer struct{ s string }

func (v *ptrValuer) Value() (driver.Value, error) {
	if v == nil {
		return "nil receiver", nil
	}
	return v.s, nil
}

type failingValuer struct{}

func (failingValuer) Value() (driver.Value, error) { return nil, errors.New("boom") }

type panickingValuer struct{}

func (panickingValuer) Value() (driver.Value, error) { panic("kaboom") }

type selfValuer struct{}

func (s selfValuer) Value() (driver.Value, error) { return s, nil }

// sliceValuer returns a slice, which database/sql would refuse but pgx
// encodes as an array.
type sliceValuer struct{}

func (sliceValuer) Value() (driver.Value, error) { return []int64{1, 2}, nil }

type jsonDoc struct {
	A int    `json:"a"`
	B string `json:"b,omitempty"`
}

// ptrMarshaler marshals itself only through a pointer.
type ptrMarshaler struct{ N int }

func (p *ptrMarshaler) MarshalJSON() ([]byte, error) { return []byte(`"custom"`), nil }

func ptr[T any](v T) *T { return &v }

func TestEncodeArgRoundTrip(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	instant := time.Date(2024, 3, 5, 6, 7, 8, 123456789, time.UTC)
	uuid := [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	const uuidText = "12345678-9abc-def0-0123-456789abcdef"
	var num pgtype.Numeric
	if err := num.Scan("123.450"); err != nil {
		t.Fatal(err)
	}
	one, two := int64(1), int64(2)

	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"typed nil pointer", (*int)(nil), nil},
		{"pointer", ptr(5), int64(5)},
		{"pointer to pointer", ptr(ptr("x")), "x"},
		{"bool", true, true},
		{"int", -3, int64(-3)},
		{"int8", int8(-8), int64(-8)},
		{"int16", int16(16), int64(16)},
		{"int32", int32(math.MinInt32), int64(math.MinInt32)},
		{"int64", int64(math.MaxInt64), int64(math.MaxInt64)},
		{"uint8", uint8(255), int64(255)},
		{"uint16", uint16(65535), int64(65535)},
		{"uint32", uint32(math.MaxUint32), int64(math.MaxUint32)},
		{"small uint64", uint64(7), int64(7)},
		{"large uint64", uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{"large uint", uint(math.MaxUint64), uint64(math.MaxUint64)},
		{"float32", float32(0.1), float32(0.1)},
		{"float64", 0.1, 0.1},
		{"NaN", math.NaN(), math.NaN()},
		{"-Inf", math.Inf(-1), math.Inf(-1)},
		{"string", "héllo\x00", "héllo\x00"},
		{"empty string", "", ""},
		{"bytes", []byte{0, 1, 255}, []byte{0, 1, 255}},
		{"empty bytes", []byte{}, []byte{}},
		{"nil bytes", []byte(nil), nil},
		{"json.RawMessage", json.RawMessage(`{"a": 1}`), `{"a": 1}`},
		{"json.RawMessage not UTF-8", json.RawMessage("\xff"), []byte("\xff")},
		{"nil json.RawMessage", json.RawMessage(nil), nil},
		{"named bytes", myBytes("ab"), []byte("ab")},
		{"time UTC", instant, instant},
		{"time Berlin", instant.In(berlin), instant.In(time.FixedZone("CET", 3600))},
		{"time fixed zero offset", instant.In(time.FixedZone("", 0)), instant.In(time.FixedZone("", 0))},
		{"time fixed named", instant.In(time.FixedZone("XYZ", -(3*3600 + 1800))), instant.In(time.FixedZone("XYZ", -(3*3600 + 1800)))},
		{"zero time", time.Time{}, time.Time{}},
		{"far time", time.Date(-4000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-4000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"duration", 90 * time.Second, 90 * time.Second},
		{"negative duration", -time.Nanosecond, -time.Nanosecond},
		{"named string", myString("s"), "s"},
		{"named int", myInt(-4), int64(-4)},
		{"named uint", myUint(math.MaxUint64), uint64(math.MaxUint64)},
		{"named float32", myFloat(1.5), float32(1.5)},
		{"named bool", myBool(true), true},
		{"named duration is its int64", myDuration(time.Second), int64(time.Second)},
		{"[16]byte", uuid, uuidText},
		{"named [16]byte", myUUID(uuid), uuidText},
		{"pgtype.UUID", pgtype.UUID{Bytes: uuid, Valid: true}, uuidText},
		{"pgtype.UUID null", pgtype.UUID{}, nil},
		{"pgtype.Numeric", num, "123.450"},
		{"pgtype.Numeric NaN", pgtype.Numeric{NaN: true, Valid: true}, "NaN"},
		{"pgtype.Numeric null", pgtype.Numeric{}, nil},
		{"*pgtype.Numeric", &num, "123.450"},
		{"nil *pgtype.Numeric", (*pgtype.Numeric)(nil), nil},
		{"pgtype.Interval", pgtype.Interval{Months: 14, Days: 3, Microseconds: 3723000004, Valid: true}, "14 mon 3 day 01:02:03.000004"},
		{"pgtype.Timestamptz", pgtype.Timestamptz{Time: instant.In(berlin), Valid: true}, instant.In(time.FixedZone("CET", 3600))},
		{"pgtype.Timestamptz infinity", pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, "infinity"},
		{"pgtype.Date", pgtype.Date{Time: time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), Valid: true}, time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"pgtype.Date -infinity", pgtype.Date{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "-infinity"},
		{"pgtype.Text", pgtype.Text{String: "t", Valid: true}, "t"},
		{"pgtype.Text null", pgtype.Text{}, nil},
		{"pgtype.Int8", pgtype.Int8{Int64: 8, Valid: true}, int64(8)},
		{"pgtype.Float8", pgtype.Float8{Float64: 2.5, Valid: true}, 2.5},
		{"pgtype.Float4 (Value is float64)", pgtype.Float4{Float32: 0.5, Valid: true}, 0.5},
		{"pgtype.Bool", pgtype.Bool{Bool: true, Valid: true}, true},
		{"pgtype.Range", pgtype.Range[pgtype.Int4]{Lower: pgtype.Int4{Int32: 1, Valid: true}, Upper: pgtype.Int4{Int32: 5, Valid: true}, LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true}, "[1,5)"},
		{"sql.NullString null", sql.NullString{}, nil},
		{"sql.NullString", sql.NullString{String: "x", Valid: true}, "x"},
		{"sql.NullInt64", sql.NullInt64{Int64: 9, Valid: true}, int64(9)},
		{"sql.Null[time.Time]", sql.Null[time.Time]{V: instant, Valid: true}, instant},
		{"Valuer", valueValuer{"v"}, "v"},
		{"nil pointer to value-receiver Valuer", (*valueValuer)(nil), nil},
		{"pointer to value-receiver Valuer", &valueValuer{"p"}, "p"},
		{"nil pointer-receiver Valuer is called", (*ptrValuer)(nil), "nil receiver"},
		{"Valuer returning a slice", sliceValuer{}, []int64{1, 2}},
		{"net.IP v4", net.IPv4(192, 168, 0, 1).To4(), "192.168.0.1"},
		{"net.IP v4 in 16 bytes", net.ParseIP("192.168.0.1"), "::ffff:192.168.0.1"},
		{"nil net.IP", net.IP(nil), nil},
		{"*net.IPNet", &net.IPNet{IP: net.IPv4(10, 1, 2, 3).To4(), Mask: net.CIDRMask(8, 32)}, "10.1.2.3/8"},
		{"netip.Addr", netip.MustParseAddr("2001:db8::1"), "2001:db8::1"},
		{"zero netip.Addr", netip.Addr{}, nil},
		{"netip.Prefix", netip.MustParsePrefix("10.0.0.0/8"), "10.0.0.0/8"},
		{"map", map[string]any{"a": 1, "b": []int{2}}, `{"a":1,"b":[2]}`},
		{"nil map", map[string]any(nil), nil},
		{"map[string]string", map[string]string{"k": "v"}, `{"k":"v"}`},
		{"struct", jsonDoc{A: 1}, `{"a":1}`},
		{"pointer-receiver MarshalJSON", &ptrMarshaler{N: 1}, `"custom"`},

		// Arrays.
		{"[]int64", []int64{1, -2}, []int64{1, -2}},
		{"empty []int64", []int64{}, []int64{}},
		{"nil []int64", []int64(nil), nil},
		{"[]int32", []int32{1, math.MaxInt32}, []int32{1, math.MaxInt32}},
		{"empty []int32", []int32{}, []int32{}},
		{"[]int16", []int16{-1}, []int16{-1}},
		{"[]int8", []int8{-1}, []int16{-1}},
		{"[]int", []int{3}, []int64{3}},
		{"[]uint16", []uint16{3}, []int64{3}},
		{"[]uint64", []uint64{1, math.MaxUint64}, []uint64{1, math.MaxUint64}},
		{"[]float32", []float32{0.1}, []float32{0.1}},
		{"[]float64", []float64{0.1, math.Inf(1)}, []float64{0.1, math.Inf(1)}},
		{"[]bool", []bool{true, false}, []bool{true, false}},
		{"[]string", []string{"a", "", "c,d"}, []string{"a", "", "c,d"}},
		{"named []int64", myInts{4}, []int64{4}},
		{"[][]byte", [][]byte{{1}, nil, {}}, [][]byte{{1}, nil, {}}},
		{"[]json.RawMessage", []json.RawMessage{json.RawMessage(`1`), nil}, []*string{ptr("1"), nil}},
		{"[]time.Time", []time.Time{instant, instant.In(berlin)}, []time.Time{instant, instant.In(time.FixedZone("CET", 3600))}},
		{"[]*int64", []*int64{&one, nil, &two}, []*int64{&one, nil, &two}},
		{"[]*string all nil", []*string{nil}, []*string{nil}},
		{"[]*time.Time", []*time.Time{nil, &instant}, []*time.Time{nil, &instant}},
		{"[][]int64", [][]int64{{1, 2}, {3, 4}}, [][]int64{{1, 2}, {3, 4}}},
		{"[][]*int64 with a NULL in one row", [][]*int64{{&one, nil}, {&two, &one}}, [][]*int64{{&one, nil}, {&two, &one}}},
		{"[][]int64 with nil rows", [][]int64{nil, nil, {}}, [][]int64{nil, nil, {}}},
		{"[][]int64 with only nil rows", [][]int64{nil, nil}, [][]any{nil, nil}},
		{"[][][]string", [][][]string{{{"a"}}, {{"b"}}}, [][][]string{{{"a"}}, {{"b"}}}},
		{"[3]int64", [3]int64{1, 2, 3}, []int64{1, 2, 3}},
		{"[]uuid", [][16]byte{uuid}, []string{uuidText}},
		{"[]net.IP", []net.IP{net.IPv4(1, 2, 3, 4).To4(), nil}, []*string{ptr("1.2.3.4"), nil}},
		{"[]pgtype.Text", []pgtype.Text{{String: "a", Valid: true}, {}}, []*string{ptr("a"), nil}},
		{"[]pgtype.Numeric", []pgtype.Numeric{num}, []string{"123.450"}},
		{"[]sql.NullInt64", []sql.NullInt64{{Int64: 1, Valid: true}, {}}, []*int64{&one, nil}},
		{"[]any ints", []any{int64(1), nil, 2}, []*int64{&one, nil, &two}},
		{"[]any empty", []any{}, []any{}},
		{"[]any NULLs", []any{nil, nil}, []any{nil, nil}},
		{"[]any mixed is JSON", []any{1, "a"}, `[1,"a"]`},
		{"[]map is JSON", []map[string]int{{"a": 1}}, `[{"a":1}]`},
		{"[]struct is JSON", []jsonDoc{{A: 1}, {A: 2, B: "x"}}, `[{"a":1},{"a":2,"b":"x"}]`},
		{"[]time.Duration as pgx interval text", []time.Duration{time.Second}, `{00:00:01}`},
		{"pgtype.Array", pgtype.Array[int64]{Elements: []int64{1, 2, 3, 4}, Dims: []pgtype.ArrayDimension{{Length: 2, LowerBound: 1}, {Length: 2, LowerBound: 1}}, Valid: true}, [][]int64{{1, 2}, {3, 4}}},
		{"pgtype.Array of pointers", pgtype.Array[*int32]{Elements: []*int32{nil}, Dims: []pgtype.ArrayDimension{{Length: 1, LowerBound: 1}}, Valid: true}, []*int32{nil}},
		{"pgtype.Array empty", pgtype.Array[string]{Dims: []pgtype.ArrayDimension{}, Valid: true}, []string{}},
		{"pgtype.Array null", pgtype.Array[string]{}, nil},
		{"pgtype.Array lower bound 0", pgtype.Array[int64]{Elements: []int64{1, 2}, Dims: []pgtype.ArrayDimension{{Length: 2, LowerBound: 0}}, Valid: true}, "[0:1]={1,2}"},
		{"pgtype.FlatArray", pgtype.FlatArray[float32]{1.5}, []float32{1.5}},
		{"nil pgtype.FlatArray", pgtype.FlatArray[float32](nil), nil},
		{"*pgtype.Array", &pgtype.Array[bool]{Elements: []bool{true}, Dims: []pgtype.ArrayDimension{{Length: 1, LowerBound: 1}}, Valid: true}, []bool{true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := roundTrip(t, tt.in)
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if !same(got, tt.want) {
				t.Errorf("round trip of %#v\n got %T %#v\nwant %T %#v", tt.in, got, got, tt.want, tt.want)
			}
		})
	}
}

func TestEncodeArgKeepsUTC(t *testing.T) {
	// time.UTC and a fixed zone at offset 0 encode identically in pgx
	// except through Time.String (text parameters), which prints the zone
	// name: both survive as they were.
	instant := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	got, err := roundTrip(t, instant)
	if err != nil {
		t.Fatal(err)
	}
	if got.(time.Time).Location() != time.UTC {
		t.Errorf("UTC time arrived in %v", got.(time.Time).Location())
	}
	fixed := instant.In(time.FixedZone("", 0))
	got, err = roundTrip(t, fixed)
	if err != nil {
		t.Fatal(err)
	}
	if got.(time.Time).String() != fixed.String() {
		t.Errorf("fixed zone: got %v, want %v", got, fixed)
	}
}

func TestEncodeArgErrors(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"chan", make(chan int), "wire: argument of type chan int: unsupported kind chan"},
		{"func", func() {}, "unsupported kind func"},
		{"complex", complex(1, 2), "unsupported kind complex128"},
		{"invalid UTF-8", "\xff", "invalid byte sequence for encoding \"UTF8\": 0xff (SQLSTATE 22021)"},
		{"bad net.IP", net.IP{1, 2, 3}, "invalid net.IP of 3 bytes"},
		{"failing Valuer", failingValuer{}, "driver.Valuer: boom"},
		{"panicking Valuer", panickingValuer{}, "Value() panicked: kaboom"},
		{"Valuer returning itself", selfValuer{}, "nested too deeply"},
		{"slice of chans", []chan int{make(chan int)}, "element 0: unsupported kind chan"},
		{"ragged [][]int64", [][]int64{{1}, {2, 3}}, "ragged array: 2 elements where dimension 2 has 1"},
		{"[][]int64 with a nil row", [][]int64{{1}, nil}, "ragged array"},
		{"unserializable map", map[string]any{"c": make(chan int)}, "marshal as JSON"},
		{"ragged pgtype.Array", pgtype.Array[int64]{Elements: []int64{1}, Dims: []pgtype.ArrayDimension{{Length: 2, LowerBound: 1}}, Valid: true}, "array:"},
		{"unregistered lower bound", pgtype.Array[myString]{Elements: []myString{"a"}, Dims: []pgtype.ArrayDimension{{Length: 1, LowerBound: 3}}, Valid: true}, "lower bound 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pv, err := EncodeArg(tt.in)
			if err == nil {
				t.Fatalf("EncodeArg(%T) = %v, want an error", tt.in, pv)
			}
			var ae *ArgError
			if !errors.As(err, &ae) {
				t.Errorf("error %v is not an *ArgError", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "wire: argument of type ") {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEncodeArgs(t *testing.T) {
	vals, err := EncodeArgs([]driver.NamedValue{{Ordinal: 1, Value: int64(1)}, {Ordinal: 2, Name: "x", Value: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 2 || vals[0].GetInt64() != 1 || vals[1].GetText() != "a" {
		t.Errorf("EncodeArgs = %v", vals)
	}
	_, err = EncodeArgs([]driver.NamedValue{{Ordinal: 1, Value: 1}, {Ordinal: 2, Value: make(chan int)}})
	if err == nil || err.Error() != "wire: argument 2 of type chan int: unsupported kind chan" {
		t.Errorf("error = %v", err)
	}
	if vals, err := EncodeArgs(nil); vals != nil || err != nil {
		t.Errorf("EncodeArgs(nil) = %v, %v", vals, err)
	}
}
