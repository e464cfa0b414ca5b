package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// fakeRows is a RowSource over fixed rows, or endless ones.
type fakeRows struct {
	fields  []pgconn.FieldDescription
	rows    [][][]byte
	endless [][]byte // returned forever when set
	err     error
	tag     pgconn.CommandTag

	next   int
	closed bool
}

func (r *fakeRows) Next() bool {
	if r.closed {
		return false
	}
	if r.endless != nil {
		r.next++
		return true
	}
	if r.next >= len(r.rows) {
		r.Close()
		return false
	}
	r.next++
	return true
}

func (r *fakeRows) RawValues() [][]byte {
	if r.endless != nil {
		return r.endless
	}
	return r.rows[r.next-1]
}

func (r *fakeRows) Err() error                                   { return r.err }
func (r *fakeRows) FieldDescriptions() []pgconn.FieldDescription { return r.fields }
func (r *fakeRows) CommandTag() pgconn.CommandTag                { return r.tag }
func (r *fakeRows) Close()                                       { r.closed = true }

var twoFields = []pgconn.FieldDescription{
	{Name: "a", TableOID: 1, TableAttributeNumber: 2, DataTypeOID: pgtype.TextOID, DataTypeSize: -1, TypeModifier: -1, Format: 0},
	{Name: "b", DataTypeOID: pgtype.Int4OID, DataTypeSize: 4, TypeModifier: -1, Format: 1},
}

func TestReadResult(t *testing.T) {
	src := &fakeRows{
		fields: twoFields,
		rows: [][][]byte{
			{[]byte("ab"), nil},
			{{}, {0, 0, 0, 7}},
		},
		tag: pgconn.NewCommandTag("INSERT 0 2"),
	}
	res, err := ReadResult(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !src.closed {
		t.Error("rows not closed")
	}
	want := []byte{
		0, 0, 0, 2, 'a', 'b', 0xff, 0xff, 0xff, 0xff,
		0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 7,
	}
	if !bytes.Equal(res.Rows, want) {
		t.Errorf("rows = %v, want %v", res.Rows, want)
	}
	if res.RowCount != 2 || res.RowsAffected != 2 || res.CommandTag != "INSERT 0 2" {
		t.Errorf("count %d, affected %d, tag %q", res.RowCount, res.RowsAffected, res.CommandTag)
	}
	if len(res.Columns) != 2 {
		t.Fatalf("%d columns", len(res.Columns))
	}
	got, err := columnsFromProto(res.Columns)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != twoFields[i] {
			t.Errorf("column %d = %+v, want %+v", i, got[i], twoFields[i])
		}
	}
}

func TestReadResultLimit(t *testing.T) {
	// 3 rows of 10 bytes fit in 30 bytes; the 4th does not. The source
	// is endless: the limit must stop the reading, not the end of rows.
	src := &fakeRows{fields: twoFields[:1], endless: [][]byte{[]byte("123456")}}
	_, err := ReadResult(src, 30)
	var tl *ResultTooLargeError
	if !errors.As(err, &tl) || tl.Limit != 30 {
		t.Fatalf("error = %v, want a *ResultTooLargeError with limit 30", err)
	}
	if src.next != 4 {
		t.Errorf("read %d rows, want 4", src.next)
	}
	if !src.closed {
		t.Error("rows not closed")
	}
	if !strings.Contains(err.Error(), "30 bytes") {
		t.Errorf("message %q does not name the limit", err)
	}

	src = &fakeRows{fields: twoFields[:1], rows: [][][]byte{{[]byte("123456")}, {[]byte("123456")}, {[]byte("123456")}}}
	if _, err := ReadResult(src, 30); err != nil {
		t.Errorf("exactly at the limit: %v", err)
	}
}

func TestReadResultErrors(t *testing.T) {
	pgErr := &pgconn.PgError{Code: "23505", Message: "duplicate key"}
	_, err := ReadResult(&fakeRows{fields: twoFields, err: pgErr}, 0)
	var got *pgconn.PgError
	if !errors.As(err, &got) || got != pgErr {
		t.Errorf("error = %v, want the PgError wrapped", err)
	}
	_, err = ReadResult(&fakeRows{fields: twoFields, rows: [][][]byte{{nil}}}, 0)
	if err == nil || !strings.Contains(err.Error(), "1 values for 2 columns") {
		t.Errorf("error = %v", err)
	}
}

func TestResultFromCommandTag(t *testing.T) {
	res := ResultFromCommandTag(pgconn.NewCommandTag("UPDATE 3"))
	if res.RowsAffected != 3 || res.CommandTag != "UPDATE 3" || res.RowCount != 0 || len(res.Columns) != 0 {
		t.Errorf("result = %v", res)
	}
}

func BenchmarkReadResult(b *testing.B) {
	row := [][]byte{[]byte("some text value"), {0, 0, 0, 7}}
	rows := make([][][]byte, 1000)
	for i := range rows {
		rows[i] = row
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadResult(&fakeRows{fields: twoFields, rows: rows}, 0); err != nil {
			b.Fatal(err)
		}
	}
}
