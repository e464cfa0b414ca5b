package wire

import (
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

func resultOf(fields []pgconn.FieldDescription, rows ...[][]byte) *forwardpb.Result {
	var buf []byte
	for _, r := range rows {
		buf = appendRow(buf, r)
	}
	return &forwardpb.Result{Columns: columnsToProto(fields), RowCount: uint32(len(rows)), Rows: buf, CommandTag: "SELECT 2", RowsAffected: 2}
}

func TestRowsNext(t *testing.T) {
	r, err := NewRows(resultOf(twoFields, [][]byte{[]byte("ab"), nil}, [][]byte{{}, {0, 0, 0, 7}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Columns(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Columns = %v", got)
	}
	dest := make([]driver.Value, 2)
	if err := r.Next(dest); err != nil {
		t.Fatal(err)
	}
	if dest[0] != "ab" || dest[1] != nil {
		t.Errorf("row 1 = %#v", dest)
	}
	if err := r.Next(dest); err != nil {
		t.Fatal(err)
	}
	if dest[0] != "" || dest[1] != int64(7) {
		t.Errorf("row 2 = %#v", dest)
	}
	if err := r.Next(dest); err != io.EOF {
		t.Errorf("after the last row: %v", err)
	}
	if r.RowsAffected() != 2 || r.CommandTag().String() != "SELECT 2" {
		t.Errorf("affected %d, tag %q", r.RowsAffected(), r.CommandTag())
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
	if err := r.Next(dest); err != io.EOF {
		t.Errorf("after Close: %v", err)
	}
}

func TestRowsConvertError(t *testing.T) {
	// A 3-byte int4 is a decoding error, with stdlib's wording; the next
	// row is still read.
	r, err := NewRows(resultOf(twoFields, [][]byte{nil, {1, 2, 3}}, [][]byte{nil, {0, 0, 0, 1}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	dest := make([]driver.Value, 2)
	if err := r.Next(dest); err == nil || !strings.HasPrefix(err.Error(), "convert field 1 failed: ") {
		t.Errorf("error = %v", err)
	}
	if err := r.Next(dest); err != nil || dest[1] != int64(1) {
		t.Errorf("next row: %v, %#v", err, dest)
	}
}

func TestRowsMalformed(t *testing.T) {
	length := func(n int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }
	cat := func(bs ...[]byte) (out []byte) {
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	tests := []struct {
		name  string
		rows  []byte
		count uint32
		want  string
	}{
		{"truncated length", []byte{0, 0}, 1, "truncated length"},
		{"no data", nil, 1, "truncated length"},
		{"negative length", cat(length(-2), length(-1)), 1, "invalid length -2"},
		{"length beyond data", cat(length(5), []byte("abc")), 1, "exceeds the 3 bytes left"},
		{"huge length", cat(length(math.MaxInt32), []byte("abc")), 1, "exceeds"},
		{"missing column", cat(length(-1)), 1, "column 1: truncated length"},
		{"trailing bytes", cat(length(-1), length(-1), []byte{9}), 1, "1 bytes after the last row"},
		{"rows but count 0", cat(length(-1), length(-1)), 0, "8 bytes after the last row"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &forwardpb.Result{Columns: columnsToProto(twoFields), RowCount: tt.count, Rows: tt.rows}
			r, err := NewRows(res, nil)
			if err != nil {
				t.Fatal(err)
			}
			dest := make([]driver.Value, 2)
			for range tt.count {
				if err = r.Next(dest); err != nil {
					break
				}
			}
			if err == nil {
				err = r.Next(dest)
			}
			if err == nil || err == io.EOF || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
			if err2 := r.Next(dest); !errors.Is(err2, err) {
				t.Errorf("error not sticky: then %v", err2)
			}
		})
	}
}

func TestRowsShortDest(t *testing.T) {
	r, err := NewRows(resultOf(twoFields, [][]byte{nil, nil}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Next(make([]driver.Value, 1)); err == nil {
		t.Error("no error for a short dest")
	}
}

func TestNewRowsBadColumns(t *testing.T) {
	tests := []struct {
		name string
		col  *forwardpb.Column
	}{
		{"nil", nil},
		{"format", &forwardpb.Column{Format: 2}},
		{"attribute", &forwardpb.Column{TableAttribute: 70000}},
		{"size", &forwardpb.Column{TypeSize: 40000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewRows(&forwardpb.Result{Columns: []*forwardpb.Column{tt.col}}, nil); err == nil {
				t.Error("no error")
			}
		})
	}
	if _, err := NewRows(nil, nil); err == nil {
		t.Error("no error for a nil result")
	}
}

func TestRowsColumnTypes(t *testing.T) {
	fields := []pgconn.FieldDescription{
		{Name: "n", DataTypeOID: pgtype.NumericOID, TypeModifier: (10<<16 | 3) + 4},
		{Name: "v", DataTypeOID: pgtype.VarcharOID, TypeModifier: 20 + 4},
		{Name: "t", DataTypeOID: pgtype.TextOID, TypeModifier: -1},
		{Name: "e", DataTypeOID: 99999, TypeModifier: -1},
		{Name: "ts", DataTypeOID: pgtype.TimestamptzOID, Format: 1},
	}
	r, err := NewRows(resultOf(fields), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, s, ok := r.ColumnTypePrecisionScale(0); p != 10 || s != 3 || !ok {
		t.Errorf("numeric precision/scale = %d, %d, %v", p, s, ok)
	}
	if n, ok := r.ColumnTypeLength(1); n != 20 || !ok {
		t.Errorf("varchar length = %d, %v", n, ok)
	}
	if n, ok := r.ColumnTypeLength(2); n != math.MaxInt64 || !ok {
		t.Errorf("text length = %d, %v", n, ok)
	}
	if got := r.ColumnTypeDatabaseTypeName(1); got != "VARCHAR" {
		t.Errorf("type name = %q", got)
	}
	if got := r.ColumnTypeDatabaseTypeName(3); got != "99999" {
		t.Errorf("unknown type name = %q", got)
	}
	if got := r.ColumnTypeScanType(4); got != reflect.TypeFor[time.Time]() {
		t.Errorf("scan type = %v", got)
	}
}

// FuzzRows reads arbitrary row data under a few column layouts: Next must
// never panic and must stop.
func FuzzRows(f *testing.F) {
	f.Add(uint8(0), uint32(2), resultOf(twoFields, [][]byte{[]byte("ab"), nil}, [][]byte{{}, {0, 0, 0, 7}}).Rows)
	f.Add(uint8(1), uint32(1), []byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(uint8(2), uint32(1), []byte{0, 0, 0, 3, '{', '}', 'x'})
	layouts := [][]pgconn.FieldDescription{
		twoFields,
		{{DataTypeOID: pgtype.TimestamptzOID, Format: 1}, {DataTypeOID: pgtype.DateOID, Format: 1}, {DataTypeOID: pgtype.Float4OID, Format: 1}},
		{{DataTypeOID: pgtype.Int4ArrayOID, Format: 0}, {DataTypeOID: pgtype.NumericOID, Format: 0}, {DataTypeOID: pgtype.JSONBOID, Format: 0}, {DataTypeOID: pgtype.BoolOID, Format: 1}},
		{},
	}
	f.Fuzz(func(t *testing.T, layout uint8, count uint32, data []byte) {
		fields := layouts[int(layout)%len(layouts)]
		res := &forwardpb.Result{Columns: columnsToProto(fields), RowCount: count, Rows: data}
		r, err := NewRows(res, nil)
		if err != nil {
			t.Fatal(err)
		}
		dest := make([]driver.Value, len(fields))
		// Each row takes at least 4 bytes per column, so a malformed
		// count cannot keep Next going for long; with no columns, bound
		// the loop instead.
		for range min(uint64(count), uint64(len(data))+2) + 1 {
			err := r.Next(dest)
			if err == io.EOF {
				return
			}
			if err != nil && !strings.HasPrefix(err.Error(), "convert field") {
				return
			}
		}
	})
}
