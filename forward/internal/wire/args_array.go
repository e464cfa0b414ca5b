package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgtype"
)

// maxArrayElements bounds the element count computed from the dimensions of
// a pgtype.ArrayGetter, so that absurd dimensions fail instead of allocating.
const maxArrayElements = 1 << 28

var (
	arrayGetterType = reflect.TypeFor[pgtype.ArrayGetter]()
	netIPType       = reflect.TypeFor[net.IP]()
	netIPNetType    = reflect.TypeFor[net.IPNet]()
	netipAddrType   = reflect.TypeFor[netip.Addr]()
	netipPrefixType = reflect.TypeFor[netip.Prefix]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
)

// encodeList encodes a Go slice or array (other than a byte slice) as a
// PostgreSQL array, as pgx's slice and array wrappers do. The element kind
// comes from the static element type where it can, so that an empty or
// all-NULL []int32 still arrives as a []int32.
func (e *encoder) encodeList(v any, rv reflect.Value, depth int) (*forwardpb.Value, error) {
	if e.listNeedsJSON(rv) {
		// pgx's JSON codecs marshal the whole slice; a slice of maps or
		// structs has no other sensible target.
		return jsonText(v)
	}
	elems := make([]*forwardpb.Value, rv.Len())
	for i := range elems {
		pv, err := e.encode(rv.Index(i).Interface(), depth+1)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		elems[i] = pv
	}
	kind, err := elemKind(e.staticKind(rv.Type().Elem()), elems)
	if err != nil {
		// No protocol kind fits (e.g. []time.Duration): let pgx's codec for
		// the Go type write the array's text form, if pgx knows the type.
		if pv, ok, terr := e.tryRegisteredText(v); ok {
			return pv, terr
		}
		if rv.Type().Elem().Kind() == reflect.Interface {
			return jsonText(v) // []any of mixed kinds: only JSON can hold it
		}
		return nil, err
	}
	pv := arrayValue(kind, elems)
	if kind == forwardpb.Array_KIND_ARRAY {
		// Fail here with a clear error rather than on the server.
		if _, err := checkArray(pv.GetArray()); err != nil {
			return nil, err
		}
	}
	return pv, nil
}

// encodeArrayGetter encodes a pgtype.Array, pgtype.FlatArray or other
// ArrayGetter. Multi-dimensional arrays become nested arrays; custom lower
// bounds have no protocol form, so such arrays go through pgx's text
// encoding (which writes them) when pgx knows the type.
func (e *encoder) encodeArrayGetter(v any, ag pgtype.ArrayGetter, depth int) (pv *forwardpb.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			pv, err = nil, fmt.Errorf("array: %v", r)
		}
	}()
	dims := ag.Dimensions()
	if dims == nil {
		return nullValue(), nil
	}
	count := 1
	for _, d := range dims {
		if d.LowerBound != 1 {
			if pv, ok, err := e.tryRegisteredText(v); ok {
				return pv, err
			}
			return nil, fmt.Errorf("array lower bound %d cannot be forwarded", d.LowerBound)
		}
		if d.Length < 0 {
			return nil, fmt.Errorf("negative array dimension %d", d.Length)
		}
		count *= int(d.Length)
		if count > maxArrayElements {
			return nil, errors.New("array too large")
		}
	}
	static := e.staticKind(reflect.TypeOf(ag.IndexType()))
	if len(dims) == 0 || count == 0 {
		return arrayValue(static, nil), nil
	}
	flat := make([]*forwardpb.Value, count)
	for i := range flat {
		if flat[i], err = e.encode(ag.Index(i), depth+1); err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
	}
	kind, err := elemKind(static, flat)
	if err != nil {
		return nil, err
	}
	return nestArray(kind, flat, dims), nil
}

// nestArray splits the flat, row-major elements of a multi-dimensional array
// into nested arrays, one level per dimension.
func nestArray(kind forwardpb.Array_Kind, flat []*forwardpb.Value, dims []pgtype.ArrayDimension) *forwardpb.Value {
	if len(dims) == 1 {
		return arrayValue(kind, flat)
	}
	stride := len(flat) / int(dims[0].Length)
	outer := make([]*forwardpb.Value, dims[0].Length)
	for i := range outer {
		outer[i] = nestArray(kind, flat[i*stride:(i+1)*stride], dims[1:])
	}
	return arrayValue(forwardpb.Array_KIND_ARRAY, outer)
}

func arrayValue(kind forwardpb.Array_Kind, elems []*forwardpb.Value) *forwardpb.Value {
	return &forwardpb.Value{Kind: &forwardpb.Value_Array{Array: &forwardpb.Array{ElemKind: kind, Elems: elems}}}
}

// staticKind is the array element kind implied by a Go element type, or
// KIND_UNSPECIFIED when only the values can tell (interfaces, Valuers).
func (e *encoder) staticKind(t reflect.Type) forwardpb.Array_Kind {
	for t != nil {
		if t.Implements(valuerType) {
			return forwardpb.Array_KIND_UNSPECIFIED
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	if t == nil {
		return forwardpb.Array_KIND_UNSPECIFIED
	}
	switch t {
	case timeType:
		return forwardpb.Array_KIND_TIME
	case durationType:
		return forwardpb.Array_KIND_UNSPECIFIED // no protocol kind
	case netIPType, netIPNetType, netipAddrType, netipPrefixType:
		return forwardpb.Array_KIND_TEXT
	case rawMessageType:
		return forwardpb.Array_KIND_UNSPECIFIED // text, or bytes when not UTF-8
	}
	if t.Implements(arrayGetterType) {
		return forwardpb.Array_KIND_ARRAY
	}
	switch t.Kind() {
	case reflect.Bool:
		return forwardpb.Array_KIND_BOOL
	case reflect.Int8, reflect.Int16:
		return forwardpb.Array_KIND_INT16
	case reflect.Int32:
		return forwardpb.Array_KIND_INT32
	case reflect.Int, reflect.Int64, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return forwardpb.Array_KIND_INT64
	case reflect.Uint, reflect.Uint64:
		return forwardpb.Array_KIND_UINT64
	case reflect.Float32:
		return forwardpb.Array_KIND_FLOAT32
	case reflect.Float64:
		return forwardpb.Array_KIND_FLOAT64
	case reflect.String:
		return forwardpb.Array_KIND_TEXT
	case reflect.Slice:
		if t.AssignableTo(byteSliceType) {
			return forwardpb.Array_KIND_BYTES
		}
		return forwardpb.Array_KIND_ARRAY
	case reflect.Array:
		if t.Len() == 16 && t.Elem().Kind() == reflect.Uint8 {
			return forwardpb.Array_KIND_TEXT // UUID
		}
		return forwardpb.Array_KIND_ARRAY
	case reflect.Struct, reflect.Map:
		return forwardpb.Array_KIND_TEXT // pgx-registered type in text form, or JSON
	}
	return forwardpb.Array_KIND_UNSPECIFIED
}

// elemKind checks that every non-NULL element fits the array kind and
// returns that kind; with no static kind it infers one from the values.
func elemKind(static forwardpb.Array_Kind, elems []*forwardpb.Value) (forwardpb.Array_Kind, error) {
	kind := static
	for i, el := range elems {
		k, isNull := valueKind(el)
		if isNull {
			continue
		}
		if k == forwardpb.Array_KIND_UNSPECIFIED {
			return 0, fmt.Errorf("element %d: %T has no array element form", i, el.GetKind())
		}
		if kind == forwardpb.Array_KIND_UNSPECIFIED {
			kind = k
			continue
		}
		if !kindAccepts(kind, k) {
			return 0, fmt.Errorf("element %d: mixed element kinds %s and %s", i, kind, k)
		}
	}
	return kind, nil
}

// valueKind maps a scalar protocol value to the array kind that holds it.
func valueKind(v *forwardpb.Value) (k forwardpb.Array_Kind, isNull bool) {
	switch v.GetKind().(type) {
	case *forwardpb.Value_Null:
		return 0, true
	case *forwardpb.Value_Bool:
		return forwardpb.Array_KIND_BOOL, false
	case *forwardpb.Value_Int64:
		return forwardpb.Array_KIND_INT64, false
	case *forwardpb.Value_Uint64:
		return forwardpb.Array_KIND_UINT64, false
	case *forwardpb.Value_Float64:
		return forwardpb.Array_KIND_FLOAT64, false
	case *forwardpb.Value_Float32:
		return forwardpb.Array_KIND_FLOAT32, false
	case *forwardpb.Value_Text:
		return forwardpb.Array_KIND_TEXT, false
	case *forwardpb.Value_Bytes:
		return forwardpb.Array_KIND_BYTES, false
	case *forwardpb.Value_Time:
		return forwardpb.Array_KIND_TIME, false
	case *forwardpb.Value_Array:
		return forwardpb.Array_KIND_ARRAY, false
	}
	return forwardpb.Array_KIND_UNSPECIFIED, false
}

// kindAccepts reports whether an element of value kind k may appear in an
// array of kind a. Integers travel as int64 (or uint64 above MaxInt64) and
// are narrowed by the array kind on the server.
func kindAccepts(a, k forwardpb.Array_Kind) bool {
	if a == k {
		return true
	}
	switch a {
	case forwardpb.Array_KIND_INT32, forwardpb.Array_KIND_INT16, forwardpb.Array_KIND_UINT64:
		return k == forwardpb.Array_KIND_INT64 || (a == forwardpb.Array_KIND_UINT64 && k == forwardpb.Array_KIND_UINT64)
	}
	return false
}

// listNeedsJSON reports whether a slice holds maps or structs that pgx would
// only know how to marshal as JSON (directly or nested in inner slices).
func (e *encoder) listNeedsJSON(rv reflect.Value) bool {
	et := rv.Type().Elem()
	if et.Kind() != reflect.Interface {
		return e.typeNeedsJSON(et)
	}
	for i := range rv.Len() {
		el := rv.Index(i)
		if el.IsNil() {
			continue
		}
		if e.typeNeedsJSON(el.Elem().Type()) {
			return true
		}
	}
	return false
}

func (e *encoder) typeNeedsJSON(t reflect.Type) bool {
	for {
		if t.Implements(valuerType) || t.Implements(arrayGetterType) {
			return false
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		if t.AssignableTo(byteSliceType) || t == netIPType {
			return false
		}
		return e.typeNeedsJSON(t.Elem())
	case reflect.Array:
		return e.typeNeedsJSON(t.Elem())
	case reflect.Map, reflect.Struct:
		if t == timeType || t == netIPNetType || t == netipAddrType || t == netipPrefixType {
			return false
		}
		_, registered := e.typeMap().TypeForValue(reflect.Zero(t).Interface())
		return !registered
	}
	return false
}
