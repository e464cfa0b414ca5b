package wire

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// ResultTooLargeError is returned by ReadResult when the rows of a result
// (by StreamResult with parts, one row) exceed the byte limit. The statement has run: the caller must not commit
// a transaction whose result the client never saw.
type ResultTooLargeError struct {
	Limit int // bytes
}

func (e *ResultTooLargeError) Error() string {
	return fmt.Sprintf("wire: result rows exceed the forwarding limit of %d bytes; select fewer rows or columns", e.Limit)
}

// RowSource is the part of pgx.Rows that ReadResult reads.
type RowSource interface {
	Next() bool
	Err() error
	FieldDescriptions() []pgconn.FieldDescription
	RawValues() [][]byte
	CommandTag() pgconn.CommandTag
	Close()
}

var _ RowSource = pgx.Rows(nil)

// ResultFormats returns the result formats pgx's stdlib driver asks for:
// binary for the types database/sql maps to Go types, text for the rest. The
// executor must pass it as the first argument of Query so that the raw values
// it forwards are the ones stdlib would have decoded (timestamptz in text
// format, for one, would depend on the session's TimeZone).
func ResultFormats() pgx.QueryResultFormatsByOID {
	return pgx.QueryResultFormatsByOID{
		pgtype.BoolOID:        pgtype.BinaryFormatCode,
		pgtype.ByteaOID:       pgtype.BinaryFormatCode,
		pgtype.CIDOID:         pgtype.BinaryFormatCode,
		pgtype.DateOID:        pgtype.BinaryFormatCode,
		pgtype.Float4OID:      pgtype.BinaryFormatCode,
		pgtype.Float8OID:      pgtype.BinaryFormatCode,
		pgtype.Int2OID:        pgtype.BinaryFormatCode,
		pgtype.Int4OID:        pgtype.BinaryFormatCode,
		pgtype.Int8OID:        pgtype.BinaryFormatCode,
		pgtype.OIDOID:         pgtype.BinaryFormatCode,
		pgtype.TimestampOID:   pgtype.BinaryFormatCode,
		pgtype.TimestamptzOID: pgtype.BinaryFormatCode,
		pgtype.XIDOID:         pgtype.BinaryFormatCode,
	}
}

// ReadResult reads all of rows into a Result: the columns as described,
// the raw values in DataRow layout (per value a big-endian int32 length, -1
// for NULL, then the bytes), the command tag and the rows affected. It
// closes rows. maxBytes bounds the row data and is checked before each row
// is appended, so an oversized result stops early with a
// *ResultTooLargeError; 0 or less means no limit. An error of the query
// (such as a *pgconn.PgError) is returned wrapped.
func ReadResult(rows RowSource, maxBytes int) (*forwardpb.Result, error) {
	return StreamResult(rows, maxBytes, 0, nil)
}

// StreamResult reads rows as ReadResult does, but with emit set it hands
// every partBytes or so of row data to emit as a part of the result (a
// Result with More set; the first carries the columns) and returns the last
// part, with the command tag and the rows affected: the memory it holds is
// one part, whatever the result's size. A part holds at least one row, so
// maxBytes bounds one row then. With emit nil it returns the whole result
// in one Result, as ReadResult.
func StreamResult(rows RowSource, maxBytes, partBytes int, emit func(*forwardpb.Result)) (*forwardpb.Result, error) {
	defer rows.Close()

	fields := rows.FieldDescriptions()
	var buf []byte
	var count uint32
	first := true // the next part is the first: it carries the columns
	for rows.Next() {
		if fields == nil {
			// Some result readers only know their fields once a row
			// has arrived.
			fields = rows.FieldDescriptions()
		}
		values := rows.RawValues()
		if len(values) != len(fields) {
			return nil, fmt.Errorf("wire: row %d has %d values for %d columns", count+1, len(values), len(fields))
		}
		size := 0
		for _, v := range values {
			size += 4 + len(v)
		}
		if emit != nil && count > 0 && len(buf)+size > partBytes {
			part := &forwardpb.Result{RowCount: count, Rows: buf, More: true}
			if first {
				part.Columns, first = columnsToProto(fields), false
			}
			emit(part)
			buf, count = make([]byte, 0, partBytes), 0
		}
		if maxBytes > 0 && len(buf)+size > maxBytes {
			return nil, &ResultTooLargeError{Limit: maxBytes}
		}
		if count == math.MaxUint32 {
			return nil, fmt.Errorf("wire: more than %d rows", uint32(math.MaxUint32))
		}
		buf = appendRow(buf, values)
		count++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("wire: read rows: %w", err)
	}
	if fields == nil {
		fields = rows.FieldDescriptions()
	}

	tag := rows.CommandTag()
	last := &forwardpb.Result{
		RowCount:     count,
		Rows:         buf,
		RowsAffected: tag.RowsAffected(),
		CommandTag:   tag.String(),
	}
	if first {
		last.Columns = columnsToProto(fields)
	}
	return last, nil
}

// ResultFromCommandTag is the Result of a statement that returns no rows,
// such as one run with pgx.Conn.Exec.
func ResultFromCommandTag(tag pgconn.CommandTag) *forwardpb.Result {
	return &forwardpb.Result{RowsAffected: tag.RowsAffected(), CommandTag: tag.String()}
}

func appendRow(buf []byte, values [][]byte) []byte {
	for _, v := range values {
		if v == nil {
			buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // -1: NULL
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
		buf = append(buf, v...)
	}
	return buf
}

func columnsToProto(fields []pgconn.FieldDescription) []*forwardpb.Column {
	if len(fields) == 0 {
		return nil
	}
	cols := make([]*forwardpb.Column, len(fields))
	backing := make([]forwardpb.Column, len(fields)) // one allocation
	for i, f := range fields {
		c := &backing[i]
		c.Name = f.Name
		c.TableOid = f.TableOID
		c.TableAttribute = uint32(f.TableAttributeNumber)
		c.TypeOid = f.DataTypeOID
		c.TypeSize = int32(f.DataTypeSize)
		c.TypeModifier = f.TypeModifier
		c.Format = int32(f.Format)
		cols[i] = c
	}
	return cols
}
