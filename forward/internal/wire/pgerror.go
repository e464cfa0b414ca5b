package wire

import (
	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/jackc/pgx/v5/pgconn"
)

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
