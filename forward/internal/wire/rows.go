package wire

import (
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Rows is a database/sql driver.Rows over a forwarded Result. Its values,
// column names and column type information are those of pgx's stdlib Rows
// for the same raw values, because it decodes them with the same pgx codecs
// in the same way.
//
// A Rows is not safe for concurrent use, and neither is the pgtype.Map it
// decodes with: give each connection its own Map, as pgx does.
type Rows struct {
	m          *pgtype.Map
	fields     []pgconn.FieldDescription
	names      []string
	valueFuncs []rowValueFunc

	data      []byte // row data not read yet
	remaining uint32 // rows not read yet
	row       int    // rows read, for error messages
	values    [][]byte
	err       error // sticky: malformed data, or the result's failure

	more    bool                              // parts follow (see Continue)
	next    func() (*forwardpb.Result, error) // the next part
	discard func() error                      // ends the result early
	endErr  error                             // returned after the last row instead of io.EOF

	tag          pgconn.CommandTag
	rowsAffected int64
}

var (
	_ driver.Rows                           = (*Rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*Rows)(nil)
	_ driver.RowsColumnTypeLength           = (*Rows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*Rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*Rows)(nil)
)

// NewRows returns the rows of res, decoded with m (pgtype.NewMap() when m
// is nil). It checks the column descriptions; malformed row data is
// reported by Next.
func NewRows(res *forwardpb.Result, m *pgtype.Map) (*Rows, error) {
	if res == nil {
		return nil, errors.New("wire: no result")
	}
	if m == nil {
		m = pgtype.NewMap()
	}
	fields, err := columnsFromProto(res.Columns)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	return &Rows{
		m:            m,
		fields:       fields,
		names:        names,
		valueFuncs:   valueFuncs(m, fields),
		data:         res.Rows,
		remaining:    res.RowCount,
		values:       make([][]byte, len(fields)),
		tag:          pgconn.NewCommandTag(res.CommandTag),
		rowsAffected: res.RowsAffected,
		more:         res.More,
	}, nil
}

// Continue says how a result that arrives in parts goes on (NewRows's
// Result had More set): next returns the next part, which may come with
// an error that follows its rows (the statement failed after them, or its
// COMMIT did); an error without a part ends the rows there. discard ends
// the result when the rows are closed before its last part, and returns
// what that end reports. Without Continue a result with More set fails at
// the end of its first part.
func (r *Rows) Continue(next func() (*forwardpb.Result, error), discard func() error) {
	r.next, r.discard = next, discard
}

// FailAtEnd makes Next return err after the last row instead of io.EOF,
// as pgx reports a statement whose COMMIT failed after its rows.
func (r *Rows) FailAtEnd(err error) { r.endErr = err }

// Done reports whether the result has been read to its end (or failed).
func (r *Rows) Done() bool { return !r.more || r.err != nil }

// nextPart moves to the next part of the result.
func (r *Rows) nextPart() error {
	if r.next == nil {
		r.more = false
		return errors.New("wire: the result continues in parts, but nothing reads them")
	}
	part, err := r.next()
	r.more = false
	if part != nil {
		r.data, r.remaining, r.more = part.Rows, part.RowCount, part.More && err == nil
		if !part.More {
			r.tag, r.rowsAffected = pgconn.NewCommandTag(part.CommandTag), part.RowsAffected
		}
	}
	if err != nil {
		if part == nil {
			return err
		}
		r.endErr = err // after this part's rows
	}
	return nil
}

func columnsFromProto(cols []*forwardpb.Column) ([]pgconn.FieldDescription, error) {
	fields := make([]pgconn.FieldDescription, len(cols))
	for i, c := range cols {
		if c == nil {
			return nil, fmt.Errorf("wire: column %d: missing", i)
		}
		if c.TableAttribute > math.MaxUint16 {
			return nil, fmt.Errorf("wire: column %d: table attribute %d out of range", i, c.TableAttribute)
		}
		if c.TypeSize < math.MinInt16 || c.TypeSize > math.MaxInt16 {
			return nil, fmt.Errorf("wire: column %d: type size %d out of range", i, c.TypeSize)
		}
		if c.Format != pgtype.TextFormatCode && c.Format != pgtype.BinaryFormatCode {
			return nil, fmt.Errorf("wire: column %d: unknown format %d", i, c.Format)
		}
		fields[i] = pgconn.FieldDescription{
			Name:                 c.Name,
			TableOID:             c.TableOid,
			TableAttributeNumber: uint16(c.TableAttribute),
			DataTypeOID:          c.TypeOid,
			DataTypeSize:         int16(c.TypeSize),
			TypeModifier:         c.TypeModifier,
			Format:               int16(c.Format),
		}
	}
	return fields, nil
}

// Columns returns the column names.
func (r *Rows) Columns() []string { return r.names }

// FieldDescriptions returns the columns as the primary described them.
func (r *Rows) FieldDescriptions() []pgconn.FieldDescription { return r.fields }

// CommandTag returns the statement's command tag.
func (r *Rows) CommandTag() pgconn.CommandTag { return r.tag }

// RowsAffected returns the number of rows the statement affected.
func (r *Rows) RowsAffected() int64 { return r.rowsAffected }

// Close releases the row data. A result whose last part has not arrived
// is ended with the discard function given to Continue, and Close returns
// what that reports; a result that failed after its rows (FailAtEnd, or
// its last part) returns that failure, if Next has not yet. As pgx's
// stdlib rows, Close then reports the statement's error.
func (r *Rows) Close() error {
	r.data, r.remaining, r.values = nil, 0, nil
	if r.err != nil {
		return nil // Next reported it
	}
	if r.more {
		r.more = false
		if r.discard != nil {
			if err := r.discard(); err != nil {
				r.err = err
				return err
			}
		}
	}
	if r.endErr != nil {
		r.err = r.endErr
		return r.err
	}
	return nil
}

// Next reads the next row into dest as stdlib's Rows.Next does. It returns
// io.EOF after the last row, or an error if the row data is malformed
// (truncated, with a bad length, or with bytes left over).
func (r *Rows) Next(dest []driver.Value) error {
	if r.err != nil {
		return r.err
	}
	for r.remaining == 0 {
		if len(r.data) != 0 {
			r.err = fmt.Errorf("wire: %d bytes after the last row", len(r.data))
			r.data = nil
			return r.err
		}
		if !r.more {
			if r.endErr != nil {
				r.err = r.endErr
				return r.err
			}
			return io.EOF
		}
		if err := r.nextPart(); err != nil {
			r.err = err
			return err
		}
	}
	if len(dest) < len(r.fields) {
		return fmt.Errorf("wire: %d destinations for %d columns", len(dest), len(r.fields))
	}
	if err := r.readRow(); err != nil {
		r.err = err
		return err
	}
	for i, rv := range r.values {
		if rv == nil {
			dest[i] = nil
			continue
		}
		var err error
		dest[i], err = r.valueFuncs[i](rv)
		if err != nil {
			// stdlib's wording, so that errors match too.
			return fmt.Errorf("convert field %d failed: %w", i, err)
		}
	}
	return nil
}

// readRow slices the next row's values out of the row data (without
// copying: the data is never modified).
func (r *Rows) readRow() error {
	r.row++
	data := r.data
	for i := range r.values {
		if len(data) < 4 {
			return fmt.Errorf("wire: row %d column %d: truncated length", r.row, i)
		}
		n := int32(binary.BigEndian.Uint32(data))
		data = data[4:]
		switch {
		case n == -1:
			r.values[i] = nil
		case n < 0:
			return fmt.Errorf("wire: row %d column %d: invalid length %d", r.row, i, n)
		case int64(n) > int64(len(data)):
			return fmt.Errorf("wire: row %d column %d: length %d exceeds the %d bytes left", r.row, i, n, len(data))
		default:
			r.values[i] = data[:n:n]
			data = data[n:]
		}
	}
	r.data = data
	r.remaining--
	return nil
}

// ColumnTypeDatabaseTypeName returns the upper-cased pgx name of the
// column's type, or its OID in decimal when pgx does not know it (as for an
// enum), as stdlib does.
func (r *Rows) ColumnTypeDatabaseTypeName(index int) string {
	oid := r.fields[index].DataTypeOID
	if dt, ok := r.m.TypeForOID(oid); ok {
		return strings.ToUpper(dt.Name)
	}
	return strconv.FormatInt(int64(oid), 10)
}

// varHeaderSize is the varlena header PostgreSQL counts in type modifiers.
const varHeaderSize = 4

// ColumnTypeLength returns the length of variable-length types as stdlib
// does.
func (r *Rows) ColumnTypeLength(index int) (int64, bool) {
	fd := r.fields[index]
	switch fd.DataTypeOID {
	case pgtype.TextOID, pgtype.ByteaOID:
		return math.MaxInt64, true
	case pgtype.VarcharOID, pgtype.BPCharOID:
		return int64(fd.TypeModifier - varHeaderSize), true
	case pgtype.VarbitOID:
		return int64(fd.TypeModifier), true
	default:
		return 0, false
	}
}

// ColumnTypePrecisionScale returns the precision and scale of numeric
// columns as stdlib does.
func (r *Rows) ColumnTypePrecisionScale(index int) (precision, scale int64, ok bool) {
	fd := r.fields[index]
	switch fd.DataTypeOID {
	case pgtype.NumericOID:
		mod := fd.TypeModifier - varHeaderSize
		precision = int64((mod >> 16) & 0xffff)
		scale = int64(mod & 0xffff)
		return precision, scale, true
	default:
		return 0, 0, false
	}
}

// ColumnTypeScanType returns the Go type stdlib reports for the column.
func (r *Rows) ColumnTypeScanType(index int) reflect.Type {
	switch r.fields[index].DataTypeOID {
	case pgtype.Float8OID:
		return reflect.TypeFor[float64]()
	case pgtype.Float4OID:
		return reflect.TypeFor[float32]()
	case pgtype.Int8OID:
		return reflect.TypeFor[int64]()
	case pgtype.Int4OID:
		return reflect.TypeFor[int32]()
	case pgtype.Int2OID:
		return reflect.TypeFor[int16]()
	case pgtype.BoolOID:
		return reflect.TypeFor[bool]()
	case pgtype.NumericOID:
		return reflect.TypeFor[float64]()
	case pgtype.DateOID, pgtype.TimestampOID, pgtype.TimestamptzOID:
		return reflect.TypeFor[time.Time]()
	case pgtype.ByteaOID:
		return reflect.TypeFor[[]byte]()
	default:
		return reflect.TypeFor[string]()
	}
}
