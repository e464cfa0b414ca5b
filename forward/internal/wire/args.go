package wire

import (
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgtype"
)

// maxEncodeDepth bounds the recursion through pointers, driver.Valuer results
// and nested slices, so that a Valuer returning itself or a cyclic pointer
// yields an error instead of a stack overflow.
const maxEncodeDepth = 32

// ArgError reports an argument that cannot be forwarded.
type ArgError struct {
	// Ordinal is the 1-based position of the argument, or 0 when unknown
	// (a single value given to EncodeArg).
	Ordinal int
	// Type is the Go type of the original argument, as %T prints it.
	Type string
	Err  error
}

func (e *ArgError) Error() string {
	if e.Ordinal > 0 {
		return fmt.Sprintf("wire: argument %d of type %s: %v", e.Ordinal, e.Type, e.Err)
	}
	return fmt.Sprintf("wire: argument of type %s: %v", e.Type, e.Err)
}

func (e *ArgError) Unwrap() error { return e.Err }

// EncodeArg converts one statement argument, as the application passed it to
// database/sql, into its protocol form. The server rebuilds it with DecodeArg
// into a Go value that pgx encodes the way it would have encoded v.
//
// It follows pgx's own order of resolution: driver.Valuer first (with pgx's
// and database/sql's rules for nil pointers; the pgtype types are Valuers),
// then pointers, the Go types pgx knows natively, named types through their
// underlying kind, slices, arrays and pgtype.Array as PostgreSQL arrays,
// other types pgx registers (pgtype.Range, netip.Prefix, ...) as pgx's text
// encoding of them, and other maps and structs as JSON.
//
// Where pgx gives one Go value different meanings depending on the
// parameter type, which the client does not know, the value keeps the
// meaning of its natural column type: [16]byte is a uuid, net.IP an inet,
// json.RawMessage a JSON document, a map or struct JSON, a named integer an
// integer (not its String method). The type matrix test lists each case.
func EncodeArg(v any) (*forwardpb.Value, error) {
	var e encoder
	pv, err := e.encode(v, 0)
	if err != nil {
		return nil, &ArgError{Type: fmt.Sprintf("%T", v), Err: err}
	}
	return pv, nil
}

// EncodeArgs converts the arguments of one statement, in order. Names are
// ignored, as pgx's stdlib driver ignores them.
func EncodeArgs(args []driver.NamedValue) ([]*forwardpb.Value, error) {
	if len(args) == 0 {
		return nil, nil
	}
	var e encoder // shares one lazily created type map between arguments
	out := make([]*forwardpb.Value, len(args))
	for i, nv := range args {
		pv, err := e.encode(nv.Value, 0)
		if err != nil {
			ordinal := nv.Ordinal
			if ordinal == 0 {
				ordinal = i + 1
			}
			return nil, &ArgError{Ordinal: ordinal, Type: fmt.Sprintf("%T", nv.Value), Err: err}
		}
		out[i] = pv
	}
	return out, nil
}

// encoder holds the state of one EncodeArg or EncodeArgs call.
type encoder struct {
	// m is created on first use: only the text fallback needs it, and
	// pgtype.NewMap is not free.
	m *pgtype.Map
}

func (e *encoder) typeMap() *pgtype.Map {
	if e.m == nil {
		e.m = pgtype.NewMap()
	}
	return e.m
}

var (
	valuerType        = reflect.TypeFor[driver.Valuer]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	byteSliceType     = reflect.TypeFor[[]byte]()
	timeType          = reflect.TypeFor[time.Time]()
	durationType      = reflect.TypeFor[time.Duration]()
)

func (e *encoder) encode(v any, depth int) (*forwardpb.Value, error) {
	if depth > maxEncodeDepth {
		return nil, errors.New("nested too deeply (a driver.Valuer returning itself?)")
	}
	if v == nil {
		return nullValue(), nil
	}

	// pgx hands any driver.Valuer that its codecs do not know to Value(), and
	// the JSON codecs prefer Value() over everything else. For the pgtype
	// types that are Valuers, Value() returns the same datum in a form
	// PostgreSQL reads identically (e.g. pgtype.Numeric as its text).
	if vr, ok := v.(driver.Valuer); ok {
		res, isNull, err := callValuer(vr)
		if err != nil {
			return nil, fmt.Errorf("driver.Valuer: %w", err)
		}
		if isNull {
			return nullValue(), nil
		}
		return e.encode(res, depth+1)
	}

	switch x := v.(type) {
	case bool:
		return &forwardpb.Value{Kind: &forwardpb.Value_Bool{Bool: x}}, nil
	case int:
		return int64Value(int64(x)), nil
	case int8:
		return int64Value(int64(x)), nil
	case int16:
		return int64Value(int64(x)), nil
	case int32:
		return int64Value(int64(x)), nil
	case int64:
		return int64Value(x), nil
	case uint8:
		return int64Value(int64(x)), nil
	case uint16:
		return int64Value(int64(x)), nil
	case uint32:
		return int64Value(int64(x)), nil
	case uint:
		return uint64Value(uint64(x)), nil
	case uint64:
		return uint64Value(x), nil
	case float32:
		// Kept as float32: pgx formats a float32 with 32-bit precision (JSON,
		// text) where float64(x) would show the binary expansion.
		return &forwardpb.Value{Kind: &forwardpb.Value_Float32{Float32: x}}, nil
	case float64:
		return &forwardpb.Value{Kind: &forwardpb.Value_Float64{Float64: x}}, nil
	case string:
		if !utf8.ValidString(x) {
			// proto3 strings must be UTF-8, and PostgreSQL would
			// reject the text in a UTF-8 database anyway: with this.
			return nil, InvalidText(x)
		}
		return textValue(x), nil
	case []byte:
		if x == nil {
			return nullValue(), nil // pgx sends a nil slice as NULL
		}
		return &forwardpb.Value{Kind: &forwardpb.Value_Bytes{Bytes: x}}, nil
	case json.RawMessage:
		if x == nil {
			return nullValue(), nil
		}
		// pgx registers json.RawMessage as json: into a parameter type it
		// does not know (a domain, an enum) it sends the document as
		// text, where a []byte would go as bytea's hex text. Into json,
		// jsonb and text both forms give the same.
		if utf8.Valid(x) {
			return textValue(string(x)), nil
		}
		return &forwardpb.Value{Kind: &forwardpb.Value_Bytes{Bytes: x}}, nil
	case time.Time:
		return timeValue(x), nil
	case time.Duration:
		return &forwardpb.Value{Kind: &forwardpb.Value_Duration{Duration: int64(x)}}, nil
	case [16]byte:
		return textValue(uuidText(x)), nil
	case net.IP:
		if x == nil {
			return nullValue(), nil
		}
		// pgx's inet codec takes the address as netip.AddrFromSlice sees
		// it: a 16-byte IPv4 address is ::ffff:a.b.c.d, not what
		// net.IP.String prints.
		addr, ok := netip.AddrFromSlice(x)
		if !ok {
			return nil, fmt.Errorf("invalid net.IP of %d bytes", len(x))
		}
		return textValue(addr.String()), nil
	case netip.Addr:
		if x.IsValid() && x.Zone() == "" {
			// The bare address: an inet with all bits, and what pgx's
			// fmt.Stringer fallback sends into text parameters.
			return textValue(x.String()), nil
		}
		return e.registeredText(v) // pgx's inet codec: NULL for the zero Addr
	case net.IPNet, netip.Prefix:
		return e.registeredText(v)
	}

	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return nullValue(), nil
		}
		// A struct or map with a pointer-receiver MarshalJSON loses it once
		// dereferenced; pgx's JSON codec checks json.Marshaler first.
		if k := rv.Type().Elem().Kind(); (k == reflect.Struct || k == reflect.Map) &&
			rv.Type().Implements(jsonMarshalerType) && !rv.Type().Elem().Implements(jsonMarshalerType) {
			return jsonText(v)
		}
		return e.encode(rv.Elem().Interface(), depth+1)
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.String:
		// A named type (type Status string): pgx encodes its underlying
		// builtin type.
		return e.encode(rv.Convert(basicKindType(rv.Kind())).Interface(), depth+1)
	}

	if ag, ok := v.(pgtype.ArrayGetter); ok {
		return e.encodeArrayGetter(v, ag, depth)
	}

	switch rv.Kind() {
	case reflect.Slice:
		if rv.IsNil() {
			return nullValue(), nil
		}
		if rv.Type().AssignableTo(byteSliceType) { // named byte slices, as pgx does
			return e.encode(rv.Convert(byteSliceType).Interface(), depth+1)
		}
		return e.encodeList(v, rv, depth)
	case reflect.Array:
		if rv.Len() == 16 && rv.Type().Elem().Kind() == reflect.Uint8 {
			var b [16]byte
			reflect.Copy(reflect.ValueOf(b[:]), rv)
			return textValue(uuidText(b)), nil
		}
		return e.encodeList(v, rv, depth)
	case reflect.Map:
		if rv.IsNil() {
			return nullValue(), nil
		}
		if pv, ok, err := e.tryRegisteredText(v); ok {
			return pv, err
		}
		return jsonText(v)
	case reflect.Struct:
		if pv, ok, err := e.tryRegisteredText(v); ok {
			return pv, err
		}
		return jsonText(v)
	}
	return nil, fmt.Errorf("unsupported kind %s", rv.Kind())
}

// callValuer calls vr.Value() the way pgx (and database/sql's
// callValuerValue) do: a nil pointer whose Value method has a value receiver
// is NULL, because the method cannot be called on it; a nil pointer whose
// method has a pointer receiver is asked, since it may handle nil itself. A
// panic in user code becomes an error.
func callValuer(vr driver.Valuer) (res driver.Value, isNull bool, err error) {
	rv := reflect.ValueOf(vr)
	if rv.Kind() == reflect.Pointer && rv.IsNil() && rv.Type().Elem().Implements(valuerType) {
		return nil, true, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("Value() panicked: %v", r)
		}
	}()
	res, err = vr.Value()
	if err != nil {
		return nil, false, err
	}
	return res, res == nil, nil
}

// registeredText encodes v with pgx's codec for the PostgreSQL type pgx
// associates with v's Go type, in text format. The server sends the string in
// text format, which PostgreSQL parses into the parameter's type.
func (e *encoder) registeredText(v any) (*forwardpb.Value, error) {
	pv, ok, err := e.tryRegisteredText(v)
	if !ok {
		return nil, fmt.Errorf("no PostgreSQL type registered in pgx for %T", v)
	}
	return pv, err
}

func (e *encoder) tryRegisteredText(v any) (*forwardpb.Value, bool, error) {
	m := e.typeMap()
	dt, ok := m.TypeForValue(v)
	if !ok {
		return nil, false, nil
	}
	buf, err := m.Encode(dt.OID, pgtype.TextFormatCode, v, nil)
	if err != nil {
		return nil, true, fmt.Errorf("encode as %s text: %w", dt.Name, err)
	}
	if buf == nil {
		return nullValue(), true, nil
	}
	if !utf8.Valid(buf) {
		return nil, true, InvalidText(string(buf))
	}
	return textValue(string(buf)), true, nil
}

// jsonText marshals v as pgx's JSON codecs do (encoding/json) and ships the
// document as text; pgx sends a string into json and jsonb unchanged.
func jsonText(v any) (*forwardpb.Value, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal as JSON: %w", err)
	}
	return textValue(string(b)), nil
}

func nullValue() *forwardpb.Value {
	return &forwardpb.Value{Kind: &forwardpb.Value_Null{Null: &forwardpb.Null{}}}
}

func int64Value(i int64) *forwardpb.Value {
	return &forwardpb.Value{Kind: &forwardpb.Value_Int64{Int64: i}}
}

// uint64Value keeps the uint64 kind only where int64 cannot hold the value:
// below that pgx encodes a uint64 exactly as the int64 of the same value.
func uint64Value(u uint64) *forwardpb.Value {
	if u <= math.MaxInt64 {
		return int64Value(int64(u))
	}
	return &forwardpb.Value{Kind: &forwardpb.Value_Uint64{Uint64: u}}
}

func textValue(s string) *forwardpb.Value {
	return &forwardpb.Value{Kind: &forwardpb.Value_Text{Text: s}}
}

// timeValue keeps the instant and the zone offset and name: pgx encodes a
// time.Time into timestamptz as the instant, but into timestamp, date and
// time from its wall clock, and into text with Time.String (zone name).
func timeValue(t time.Time) *forwardpb.Value {
	name, offset := t.Zone()
	if !utf8.ValidString(name) {
		name = strings.ToValidUTF8(name, "?") // informational only
	}
	return &forwardpb.Value{Kind: &forwardpb.Value_Time{Time: &forwardpb.Time{
		Seconds: t.Unix(),
		Nanos:   int32(t.Nanosecond()),
		Offset:  int32(offset),
		Zone:    name,
		Utc:     t.Location() == time.UTC,
	}}}
}

// uuidText formats b as pgx formats a UUID.
func uuidText(b [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], b[10:])
	return string(buf[:])
}

func basicKindType(k reflect.Kind) reflect.Type {
	switch k {
	case reflect.Bool:
		return reflect.TypeFor[bool]()
	case reflect.Int:
		return reflect.TypeFor[int]()
	case reflect.Int8:
		return reflect.TypeFor[int8]()
	case reflect.Int16:
		return reflect.TypeFor[int16]()
	case reflect.Int32:
		return reflect.TypeFor[int32]()
	case reflect.Int64:
		return reflect.TypeFor[int64]()
	case reflect.Uint:
		return reflect.TypeFor[uint]()
	case reflect.Uint8:
		return reflect.TypeFor[uint8]()
	case reflect.Uint16:
		return reflect.TypeFor[uint16]()
	case reflect.Uint32:
		return reflect.TypeFor[uint32]()
	case reflect.Uint64:
		return reflect.TypeFor[uint64]()
	case reflect.Float32:
		return reflect.TypeFor[float32]()
	case reflect.Float64:
		return reflect.TypeFor[float64]()
	default:
		return reflect.TypeFor[string]()
	}
}
