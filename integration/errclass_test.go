package integration

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"gorm.io/gorm"
)

// errClasses are the errors callers test with errors.Is; two runs of a case
// must agree on which of them an error matches.
var errClasses = []struct {
	name string
	err  error
}{
	{"RecordNotFound", gorm.ErrRecordNotFound},
	{"DuplicatedKey", gorm.ErrDuplicatedKey},
	{"ForeignKeyViolated", gorm.ErrForeignKeyViolated},
	{"CheckConstraintViolated", gorm.ErrCheckConstraintViolated},
	{"InvalidTransaction", gorm.ErrInvalidTransaction},
	{"MissingWhereClause", gorm.ErrMissingWhereClause},
	{"PrimaryKeyRequired", gorm.ErrPrimaryKeyRequired},
	{"InvalidData", gorm.ErrInvalidData},
	{"EmptySlice", gorm.ErrEmptySlice},
	{"InvalidValue", gorm.ErrInvalidValue},
	{"InvalidField", gorm.ErrInvalidField},
	{"UnsupportedRelation", gorm.ErrUnsupportedRelation},
	{"ModelValueRequired", gorm.ErrModelValueRequired},
	{"InvalidValueOfLength", gorm.ErrInvalidValueOfLength},
	{"Canceled", context.Canceled},
	{"DeadlineExceeded", context.DeadlineExceeded},
	{"TxDone", sql.ErrTxDone},
	{"NoRows", sql.ErrNoRows},
	{"HookFailed", errHookFailed},
	{"AppCallback", errAppCallback},
	{"CaseError", errCase},
}

// errCase is the error a differential case returns from a transaction to
// roll it back.
var errCase = errors.New("case rolls back on purpose")

// errClass names what err matches: the sentinels of errClasses and the
// SQLSTATE of a PostgreSQL error; "nil" for no error, "other" for an error
// that matches none of them.
func errClass(err error) string {
	if err == nil {
		return "nil"
	}
	var out []string
	for _, c := range errClasses {
		if errors.Is(err, c.err) {
			out = append(out, c.name)
		}
	}
	if s := sqlState(err); s != "" {
		out = append(out, "sqlstate "+s)
	}
	if len(out) == 0 {
		return "other"
	}
	return strings.Join(out, ",")
}
