package integration

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Typed holds one column of each kind of value an application stores:
// JSON through a Valuer and as raw bytes, a text array through a custom
// type, times with and without zone and dates, UUIDs, numerics as strings
// and through a custom Valuer, bytea, an enum, NULLable columns.
type Typed struct {
	ID     uint
	Name   string          `gorm:"size:60"`
	Doc    Settings        `gorm:"type:jsonb"`
	Raw    json.RawMessage `gorm:"type:jsonb"`
	Labels StringArray     `gorm:"type:text[]"`
	At     time.Time
	Day    *time.Time `gorm:"type:date"`
	Wall   time.Time  `gorm:"type:timestamp"`
	Code   string     `gorm:"type:uuid"`
	Ref    *string    `gorm:"type:uuid"`
	Amount string     `gorm:"type:numeric(20,6)"`
	Price  Cents      `gorm:"type:numeric(12,2)"`
	Blob   []byte
	Mood   string `gorm:"type:mood"`
	Big    int64
	Small  int16
	Ratio  float64
	Flag   bool
	Maybe  *bool
	Note   sql.NullString
	Count  sql.NullInt64
	Span   string `gorm:"type:interval"`
	Addr   string `gorm:"type:inet"`
}

// StringArray is a text[] column through Valuer and Scanner.
type StringArray []string

// Value implements driver.Valuer with PostgreSQL's array literal.
func (a StringArray) Value() (driver.Value, error) {
	if a == nil {
		return nil, nil
	}
	quoted := make([]string, len(a))
	for i, s := range a {
		quoted[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return "{" + strings.Join(quoted, ",") + "}", nil
}

// Scan implements sql.Scanner for arrays of simple, unquoted or quoted
// elements without commas.
func (a *StringArray) Scan(v any) error {
	s, null, err := scanText("StringArray", v)
	if err != nil || null {
		*a = nil
		return err
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	*a = StringArray{}
	if s == "" {
		return nil
	}
	for _, e := range strings.Split(s, ",") {
		*a = append(*a, strings.Trim(e, `"`))
	}
	return nil
}

// Cents is money kept as integer cents in Go and numeric(12,2) in the
// database.
type Cents int64

// Value implements driver.Valuer.
func (c Cents) Value() (driver.Value, error) {
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s%d.%02d", sign, c/100, c%100), nil
}

// Scan implements sql.Scanner.
func (c *Cents) Scan(v any) error {
	s, null, err := scanText("Cents", v)
	if err != nil || null {
		*c = 0
		return err
	}
	whole, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(whole, "-")
	w, err := strconv.ParseInt(strings.TrimPrefix(whole, "-"), 10, 64)
	if err != nil {
		return err
	}
	f, err := strconv.ParseInt((frac + "00")[:2], 10, 64)
	if err != nil {
		return err
	}
	*c = Cents(w*100 + f)
	if neg {
		*c = -*c
	}
	return nil
}

// Event is a plain model for batches, large values and cancellations.
type Event struct {
	ID      uint
	Kind    string `gorm:"size:40;index"`
	Payload []byte
	N       int
}

// scanText returns a text value handed to a Scan method.
func scanText(typ string, v any) (s string, null bool, err error) {
	switch x := v.(type) {
	case nil:
		return "", true, nil
	case string:
		return x, false, nil
	case []byte:
		return string(x), false, nil
	}
	return "", false, fmt.Errorf("%s: cannot scan %T", typ, v)
}
