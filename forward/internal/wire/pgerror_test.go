package wire

import (
	"reflect"
	"testing"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"
)

func TestPgErrorRoundTrip(t *testing.T) {
	// Every field gets a distinct value, by reflection, so that a field
	// added to pgconn.PgError and forgotten here fails the test.
	var in pgconn.PgError
	v := reflect.ValueOf(&in).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + " value")
		case reflect.Int32:
			f.SetInt(int64(100 + i))
		default:
			t.Fatalf("field %s of kind %s not covered", v.Type().Field(i).Name, f.Kind())
		}
	}
	b, err := proto.Marshal(PgErrorToProto(&in))
	if err != nil {
		t.Fatal(err)
	}
	var pe forwardpb.PgError
	if err := proto.Unmarshal(b, &pe); err != nil {
		t.Fatal(err)
	}
	out := PgErrorFromProto(&pe)
	if !reflect.DeepEqual(*out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", *out, in)
	}
	if PgErrorToProto(nil) != nil || PgErrorFromProto(nil) != nil {
		t.Error("nil does not map to nil")
	}
}
