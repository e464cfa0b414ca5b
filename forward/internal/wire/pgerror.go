package wire

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgconn"
)

// InvalidText returns the error PostgreSQL gives for text that is not valid
// UTF-8 (SQLSTATE 22021, character_not_in_repertoire, with its message),
// for s, which must be invalid. flypg makes it before sending, since the
// protocol carries text as UTF-8: the caller sees what plain pgx would
// have got from the server, and nothing was sent.
func InvalidText(s string) *pgconn.PgError {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			break
		}
		i += n
	}
	// PostgreSQL shows the bytes of the sequence the first byte announces.
	n := 1
	switch c := s[min(i, len(s)-1)]; {
	case c >= 0xf0:
		n = 4
	case c >= 0xe0:
		n = 3
	case c >= 0xc0:
		n = 2
	}
	var hex []string
	for j := i; j < len(s) && j < i+n; j++ {
		hex = append(hex, fmt.Sprintf("0x%02x", s[j]))
	}
	msg := fmt.Sprintf(`invalid byte sequence for encoding "UTF8": %s`, strings.Join(hex, " "))
	return &pgconn.PgError{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "22021", Message: msg}
}

// PgErrorToProto converts a PostgreSQL error for the client, field for
// field. It returns nil for nil.
func PgErrorToProto(e *pgconn.PgError) *forwardpb.PgError {
	if e == nil {
		return nil
	}
	return &forwardpb.PgError{
		Severity:            e.Severity,
		SeverityUnlocalized: e.SeverityUnlocalized,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
		Position:            e.Position,
		InternalPosition:    e.InternalPosition,
		InternalQuery:       e.InternalQuery,
		Where:               e.Where,
		SchemaName:          e.SchemaName,
		TableName:           e.TableName,
		ColumnName:          e.ColumnName,
		DataTypeName:        e.DataTypeName,
		ConstraintName:      e.ConstraintName,
		File:                e.File,
		Line:                e.Line,
		Routine:             e.Routine,
	}
}

// PgErrorFromProto rebuilds the *pgconn.PgError the primary reported, so
// that the client's callers see the error a direct connection would have
// returned (errors.As, SQLState, ...). It returns nil for nil.
func PgErrorFromProto(e *forwardpb.PgError) *pgconn.PgError {
	if e == nil {
		return nil
	}
	return &pgconn.PgError{
		Severity:            e.Severity,
		SeverityUnlocalized: e.SeverityUnlocalized,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
		Position:            e.Position,
		InternalPosition:    e.InternalPosition,
		InternalQuery:       e.InternalQuery,
		Where:               e.Where,
		SchemaName:          e.SchemaName,
		TableName:           e.TableName,
		ColumnName:          e.ColumnName,
		DataTypeName:        e.DataTypeName,
		ConstraintName:      e.ConstraintName,
		File:                e.File,
		Line:                e.Line,
		Routine:             e.Routine,
	}
}
