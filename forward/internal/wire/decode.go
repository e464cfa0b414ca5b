package wire

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
)

// maxArrayDims is PostgreSQL's MAXDIM: deeper arrays cannot be stored, and
// the bound keeps a hostile message from recursing without limit.
const maxArrayDims = 6

// maxZoneOffset bounds a time zone offset; real ones stay within ±16h.
const maxZoneOffset = 24 * 60 * 60

// DecodeArg rebuilds a statement argument on the server. The result is nil,
// bool, int64, uint64, float32, float64, string, []byte, time.Time,
// time.Duration, or a (possibly nested) slice of the scalar types, of
// pointers to them when the array holds NULLs.
//
// For the value v the client encoded, pgx encodes the result into every
// parameter type as it would have encoded v (see EncodeArg for the few
// exceptions). Malformed input gives an error, never a panic.
func DecodeArg(v *forwardpb.Value) (any, error) {
	return decodeValue(v)
}

// DecodeArgs rebuilds the arguments of one statement.
func DecodeArgs(vs []*forwardpb.Value) ([]any, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	out := make([]any, len(vs))
	for i, v := range vs {
		a, err := decodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("wire: argument %d: %w", i+1, err)
		}
		out[i] = a
	}
	return out, nil
}

func decodeValue(v *forwardpb.Value) (any, error) {
	switch k := v.GetKind().(type) {
	case nil:
		return nil, errors.New("value without kind")
	case *forwardpb.Value_Null:
		return nil, nil
	case *forwardpb.Value_Bool:
		return k.Bool, nil
	case *forwardpb.Value_Int64:
		return k.Int64, nil
	case *forwardpb.Value_Uint64:
		return k.Uint64, nil
	case *forwardpb.Value_Float64:
		return k.Float64, nil
	case *forwardpb.Value_Float32:
		return k.Float32, nil
	case *forwardpb.Value_Text:
		return k.Text, nil
	case *forwardpb.Value_Bytes:
		return nonNilBytes(k.Bytes), nil
	case *forwardpb.Value_Time:
		return decodeTime(k.Time)
	case *forwardpb.Value_Duration:
		return time.Duration(k.Duration), nil
	case *forwardpb.Value_Array:
		return decodeArray(k.Array)
	default:
		return nil, fmt.Errorf("unknown value kind %T", k)
	}
}

// nonNilBytes keeps an empty bytea empty: pgx sends a nil []byte as NULL,
// and protobuf may decode an empty field as nil.
func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// decodeTime rebuilds the instant in the client's zone offset, so that pgx
// reads the same wall clock for timestamp, date and time. The zone is
// time.UTC itself when the client's was, else a fixed zone with the client's
// name and offset (which Time.String prints, as pgx does for text).
func decodeTime(t *forwardpb.Time) (time.Time, error) {
	if t == nil {
		return time.Time{}, errors.New("time without value")
	}
	if t.Nanos < 0 || t.Nanos >= 1e9 {
		return time.Time{}, fmt.Errorf("time nanos %d out of range", t.Nanos)
	}
	if t.Offset < -maxZoneOffset || t.Offset > maxZoneOffset {
		return time.Time{}, fmt.Errorf("time zone offset %d out of range", t.Offset)
	}
	ts := time.Unix(t.Seconds, int64(t.Nanos))
	if t.Utc {
		if t.Offset != 0 {
			return time.Time{}, fmt.Errorf("UTC time with offset %d", t.Offset)
		}
		return ts.UTC(), nil
	}
	return ts.In(time.FixedZone(t.Zone, int(t.Offset))), nil
}

// arrayShape describes a (possibly nested) array: its number of dimensions,
// its leaf element kind, and whether any leaf element is NULL, which makes
// every leaf slice a slice of pointers so that all nested slices share a type.
type arrayShape struct {
	dims     int
	leaf     forwardpb.Array_Kind
	nullLeaf bool
}

func decodeArray(a *forwardpb.Array) (any, error) {
	if a == nil {
		return nil, errors.New("array without value")
	}
	shape, err := checkArray(a)
	if err != nil {
		return nil, err
	}
	if shape.dims == 1 {
		return buildLeaf(a.Elems, shape.leaf, shape.nullLeaf)
	}
	rv, err := buildNested(a, shape, shape.dims)
	if err != nil {
		return nil, err
	}
	return rv.Interface(), nil
}

// checkArray validates a (possibly nested) array and returns its shape.
// Besides element kinds it requires every array at one depth to have one
// length (a NULL inner array counts as empty, as pgx counts a nil inner
// slice): PostgreSQL has no ragged arrays, and pgx panics on some, either
// because its own raggedness check compares only siblings, or because it
// reuses the encode plan memoized for a rectangular [][]T.
func checkArray(a *forwardpb.Array) (arrayShape, error) {
	var lens [maxArrayDims + 1]int
	for i := range lens {
		lens[i] = -1
	}
	return shapeOf(a, 1, &lens)
}

func shapeOf(a *forwardpb.Array, level int, lens *[maxArrayDims + 1]int) (arrayShape, error) {
	if level > maxArrayDims {
		return arrayShape{}, fmt.Errorf("array has more than %d dimensions", maxArrayDims)
	}
	if err := checkLength(lens, level, len(a.Elems)); err != nil {
		return arrayShape{}, err
	}
	if a.ElemKind != forwardpb.Array_KIND_ARRAY {
		if _, ok := forwardpb.Array_Kind_name[int32(a.ElemKind)]; !ok {
			return arrayShape{}, fmt.Errorf("unknown array element kind %d", a.ElemKind)
		}
		s := arrayShape{dims: 1, leaf: a.ElemKind}
		for i, el := range a.Elems {
			k, isNull := valueKind(el)
			if isNull {
				s.nullLeaf = true
				continue
			}
			if !leafAccepts(a.ElemKind, k) {
				return arrayShape{}, fmt.Errorf("element %d: %T in array of %s", i, el.GetKind(), a.ElemKind)
			}
		}
		return s, nil
	}

	var s arrayShape
	seen := false
	for i, el := range a.Elems {
		k, isNull := valueKind(el)
		if isNull {
			// A nil inner slice, which pgx sees as an empty one.
			if level < maxArrayDims {
				if err := checkLength(lens, level+1, 0); err != nil {
					return arrayShape{}, err
				}
			}
			continue
		}
		if k != forwardpb.Array_KIND_ARRAY {
			return arrayShape{}, fmt.Errorf("element %d: %T in array of arrays", i, el.GetKind())
		}
		inner, err := shapeOf(el.GetArray(), level+1, lens)
		if err != nil {
			return arrayShape{}, fmt.Errorf("element %d: %w", i, err)
		}
		switch {
		case !seen:
			s, seen = arrayShape{dims: inner.dims + 1, leaf: inner.leaf, nullLeaf: inner.nullLeaf}, true
		case inner.dims+1 != s.dims:
			return arrayShape{}, fmt.Errorf("element %d: inner arrays of different depths", i)
		case inner.leaf != s.leaf && inner.leaf != forwardpb.Array_KIND_UNSPECIFIED && s.leaf != forwardpb.Array_KIND_UNSPECIFIED:
			return arrayShape{}, fmt.Errorf("element %d: inner arrays of kinds %s and %s", i, s.leaf, inner.leaf)
		default:
			// An inner array of unspecified kind holds only NULLs and
			// takes the kind of its siblings.
			if s.leaf == forwardpb.Array_KIND_UNSPECIFIED {
				s.leaf = inner.leaf
			}
			s.nullLeaf = s.nullLeaf || inner.nullLeaf
		}
	}
	if !seen {
		// Only NULL or no inner arrays: nothing tells their type, and
		// pgx sees no elements either way.
		s = arrayShape{dims: 2, leaf: forwardpb.Array_KIND_UNSPECIFIED}
	}
	return s, nil
}

func checkLength(lens *[maxArrayDims + 1]int, level, n int) error {
	switch lens[level] {
	case -1:
		lens[level] = n
	case n:
	default:
		return fmt.Errorf("ragged array: %d elements where dimension %d has %d", n, level, lens[level])
	}
	return nil
}

// leafAccepts reports whether a scalar element of value kind k fits a leaf
// array of kind a. KIND_UNSPECIFIED holds only NULLs.
func leafAccepts(a, k forwardpb.Array_Kind) bool {
	if a == forwardpb.Array_KIND_UNSPECIFIED || k == forwardpb.Array_KIND_ARRAY {
		return false
	}
	return kindAccepts(a, k)
}

// buildNested builds the slice of slices for a nested array whose shape was
// checked by shapeOf; NULL inner arrays become nil slices.
func buildNested(a *forwardpb.Array, shape arrayShape, dims int) (reflect.Value, error) {
	typ := sliceType(shape, dims)
	if dims == 1 {
		leaf, err := buildLeaf(a.Elems, shape.leaf, shape.nullLeaf)
		if err != nil {
			return reflect.Value{}, err
		}
		return reflect.ValueOf(leaf), nil
	}
	out := reflect.MakeSlice(typ, len(a.Elems), len(a.Elems))
	for i, el := range a.Elems {
		inner := el.GetArray()
		if inner == nil {
			continue // NULL: leave the nil slice
		}
		rv, err := buildNested(inner, shape, dims-1)
		if err != nil {
			return reflect.Value{}, fmt.Errorf("element %d: %w", i, err)
		}
		out.Index(i).Set(rv)
	}
	return out, nil
}

// sliceType is the Go type of an array of the given shape with dims
// dimensions: the leaf slice wrapped in dims-1 slices.
func sliceType(shape arrayShape, dims int) reflect.Type {
	t := leafElemType(shape.leaf)
	if shape.nullLeaf && t.Kind() != reflect.Slice && t.Kind() != reflect.Interface {
		t = reflect.PointerTo(t)
	}
	for range dims {
		t = reflect.SliceOf(t)
	}
	return t
}

func leafElemType(k forwardpb.Array_Kind) reflect.Type {
	switch k {
	case forwardpb.Array_KIND_BOOL:
		return reflect.TypeFor[bool]()
	case forwardpb.Array_KIND_INT64:
		return reflect.TypeFor[int64]()
	case forwardpb.Array_KIND_INT32:
		return reflect.TypeFor[int32]()
	case forwardpb.Array_KIND_INT16:
		return reflect.TypeFor[int16]()
	case forwardpb.Array_KIND_UINT64:
		return reflect.TypeFor[uint64]()
	case forwardpb.Array_KIND_FLOAT64:
		return reflect.TypeFor[float64]()
	case forwardpb.Array_KIND_FLOAT32:
		return reflect.TypeFor[float32]()
	case forwardpb.Array_KIND_TEXT:
		return reflect.TypeFor[string]()
	case forwardpb.Array_KIND_BYTES:
		return byteSliceType
	case forwardpb.Array_KIND_TIME:
		return timeType
	default:
		return reflect.TypeFor[any]()
	}
}

// buildLeaf builds a one-dimensional array of scalars of kind kind (which
// may come from a sibling when this array holds only NULLs). With NULL
// elements (or ptr set by a sibling that has them) it builds a slice of
// pointers; bytea elements stay [][]byte with nil for NULL, and an array that
// can only hold NULLs becomes []any.
func buildLeaf(elems []*forwardpb.Value, kind forwardpb.Array_Kind, ptr bool) (any, error) {
	switch kind {
	case forwardpb.Array_KIND_BOOL:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (bool, error) { return v.GetBool(), nil })
	case forwardpb.Array_KIND_INT64:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (int64, error) { return v.GetInt64(), nil })
	case forwardpb.Array_KIND_INT32:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (int32, error) {
			i := v.GetInt64()
			if i < math.MinInt32 || i > math.MaxInt32 {
				return 0, fmt.Errorf("%d out of range for an int32 array", i)
			}
			return int32(i), nil
		})
	case forwardpb.Array_KIND_INT16:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (int16, error) {
			i := v.GetInt64()
			if i < math.MinInt16 || i > math.MaxInt16 {
				return 0, fmt.Errorf("%d out of range for an int16 array", i)
			}
			return int16(i), nil
		})
	case forwardpb.Array_KIND_UINT64:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (uint64, error) {
			if k, ok := v.GetKind().(*forwardpb.Value_Int64); ok {
				if k.Int64 < 0 {
					return 0, fmt.Errorf("%d out of range for a uint64 array", k.Int64)
				}
				return uint64(k.Int64), nil
			}
			return v.GetUint64(), nil
		})
	case forwardpb.Array_KIND_FLOAT64:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (float64, error) { return v.GetFloat64(), nil })
	case forwardpb.Array_KIND_FLOAT32:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (float32, error) { return v.GetFloat32(), nil })
	case forwardpb.Array_KIND_TEXT:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (string, error) { return v.GetText(), nil })
	case forwardpb.Array_KIND_TIME:
		return leafOf(elems, ptr, func(v *forwardpb.Value) (time.Time, error) { return decodeTime(v.GetTime()) })
	case forwardpb.Array_KIND_BYTES:
		out := make([][]byte, len(elems))
		for i, el := range elems {
			if b, ok := el.GetKind().(*forwardpb.Value_Bytes); ok {
				out[i] = nonNilBytes(b.Bytes)
			}
		}
		return out, nil
	case forwardpb.Array_KIND_UNSPECIFIED:
		return make([]any, len(elems)), nil // shapeOf allowed only NULLs
	default:
		return nil, fmt.Errorf("unknown array element kind %d", kind)
	}
}

// leafOf builds []T, or []*T when ptr is set, skipping NULL elements (left
// nil). The elements were checked by shapeOf.
func leafOf[T any](elems []*forwardpb.Value, ptr bool, get func(*forwardpb.Value) (T, error)) (any, error) {
	if !ptr {
		out := make([]T, len(elems))
		for i, el := range elems {
			v, err := get(el)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			out[i] = v
		}
		return out, nil
	}
	out := make([]*T, len(elems))
	vals := make([]T, len(elems)) // one allocation for all pointees
	for i, el := range elems {
		if _, isNull := valueKind(el); isNull {
			continue
		}
		v, err := get(el)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		vals[i] = v
		out[i] = &vals[i]
	}
	return out, nil
}
