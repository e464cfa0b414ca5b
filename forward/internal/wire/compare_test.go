package wire

import (
	"math"
	"reflect"
	"time"
)

// same reports whether a and b are the same value for the purpose of these
// tests: reflect.DeepEqual, except that times are the same when they are the
// same instant with the same wall clock, zone name and offset and location
// name (two FixedZones never share a pointer), and NaN equals NaN.
func same(a, b any) bool {
	return sameValue(reflect.ValueOf(a), reflect.ValueOf(b))
}

func sameValue(a, b reflect.Value) bool {
	if !a.IsValid() || !b.IsValid() {
		return a.IsValid() == b.IsValid()
	}
	if a.Type() != b.Type() {
		return false
	}
	if a.Type() == timeType && a.CanInterface() {
		return sameTime(a.Interface().(time.Time), b.Interface().(time.Time))
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Slice:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		fallthrough
	case reflect.Array:
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Float32, reflect.Float64:
		x, y := a.Float(), b.Float()
		return x == y || (math.IsNaN(x) && math.IsNaN(y))
	case reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			if !t.Field(i).IsExported() {
				if !a.CanInterface() {
					return false
				}
				return reflect.DeepEqual(a.Interface(), b.Interface())
			}
		}
		for i := range t.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	if !a.CanInterface() {
		return false
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func sameTime(a, b time.Time) bool {
	an, ao := a.Zone()
	bn, bo := b.Zone()
	const layout = "2006-01-02 15:04:05.999999999"
	return a.Equal(b) && an == bn && ao == bo &&
		a.Location().String() == b.Location().String() &&
		a.Format(layout) == b.Format(layout)
}
