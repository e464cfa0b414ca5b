package wire

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin on machines without zoneinfo

	"github.com/flypg/flypg/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// The type matrix runs the same statements through pgx's stdlib driver and
// through the forwarding harness against a real PostgreSQL and requires
// identical outcomes: the same column metadata, the same driver values, the
// same scanned values and scan errors, and, for arguments, the same stored
// values (compared as text on the server).

// matrixColumn is a column of the matrix table, with SQL literals for the
// rows: row 1 ordinary values, row 2 all NULL, row 3 edge values.
type matrixColumn struct {
	name, typ  string
	row1, row3 string
	argCases   []argCase
}

type argCase struct {
	name string
	v    any
}

func matrixColumns(t *testing.T) []matrixColumn {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// 00:30 on March 1st in Berlin is still February 29th in UTC: date and
	// timestamp must follow the wall clock, timestamptz the instant.
	wall := time.Date(2024, 3, 1, 0, 30, 15, 123456789, berlin)
	utc := time.Date(2024, 2, 29, 13, 14, 15, 500000000, time.UTC)
	fixed0 := utc.In(time.FixedZone("", 0))
	west := utc.In(time.FixedZone("XYZ", -(3*3600 + 1800)))
	uuid := [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	var num, small pgtype.Numeric
	if err := num.Scan("12345678901234567890.123450"); err != nil {
		t.Fatal(err)
	}
	if err := small.Scan("0.1"); err != nil {
		t.Fatal(err)
	}
	one, three := int64(1), int64(3)
	s := "s"
	return []matrixColumn{
		{name: "c_int2", typ: "int2", row1: "-32768", row3: "0", argCases: []argCase{
			{"int64", int64(5)}, {"int16", int16(-3)}, {"string", "42"}, {"uint8", uint8(7)}, {"float64", 3.0},
			{"float64 fraction", 3.5}, {"float32", float32(2)}, {"named int", myInt(1)}, {"nil", nil},
			{"nil *int", (*int)(nil)}, {"null NullInt64", sql.NullInt64{}}, {"out of range", int64(40000)},
			{"pgtype.Int2", pgtype.Int2{Int16: 9, Valid: true}}, {"bool", true},
		}},
		{name: "c_int4", typ: "int4", row1: "2147483647", row3: "-1", argCases: []argCase{
			{"int32", int32(-7)}, {"int64 out of range", int64(math.MaxInt32 + 1)}, {"string", "7"},
			{"*int64", &one}, {"json.Number", json.Number("8")}, {"pgtype.Numeric 1.0", pgtype.Numeric{Int: big.NewInt(10), Exp: -1, Valid: true}},
		}},
		{name: "c_int8", typ: "int8", row1: "-9223372036854775808", row3: "0", argCases: []argCase{
			{"int64 min", int64(math.MinInt64)}, {"uint64 max int64", uint64(math.MaxInt64)}, {"uint64 max", uint64(math.MaxUint64)},
			{"int", 12}, {"duration", 5 * time.Nanosecond}, {"named duration", myDuration(6)}, {"pgtype.Int8", pgtype.Int8{Int64: 1, Valid: true}},
			{"string spaces", " 12 "},
		}},
		{name: "c_numeric", typ: "numeric", row1: "12345678901234567890.123450", row3: "'NaN'", argCases: []argCase{
			{"pgtype.Numeric", num}, {"pgtype.Numeric NaN", pgtype.Numeric{NaN: true, Valid: true}},
			{"pgtype.Numeric inf", pgtype.Numeric{InfinityModifier: pgtype.Infinity, Valid: true}},
			{"pgtype.Numeric 1.0", pgtype.Numeric{Int: big.NewInt(10), Exp: -1, Valid: true}},
			{"pgtype.Numeric exp", pgtype.Numeric{Int: big.NewInt(5), Exp: 3, Valid: true}},
			{"float64", 0.1}, {"float32", float32(0.1)}, {"int64", int64(-5)}, {"string", "1.50"},
			{"uint64 max", uint64(math.MaxUint64)}, {"float64 NaN", math.NaN()}, {"float64 inf", math.Inf(1)},
		}},
		{name: "c_numeric_ps", typ: "numeric(10,3)", row1: "1234.5", row3: "-0.001", argCases: []argCase{
			{"float64 rounding", 1.23456}, {"string", "2.0005"}, {"too large", 1e10},
		}},
		{name: "c_float4", typ: "float4", row1: "0.1", row3: "'NaN'", argCases: []argCase{
			{"float32", float32(0.1)}, {"float64", 0.1}, {"int64", int64(3)}, {"string", "1e10"}, {"NaN", math.NaN()},
			{"float32 inf", float32(math.Inf(-1))}, {"pgtype.Float4", pgtype.Float4{Float32: 0.3, Valid: true}},
			{"float64 overflow", 1e300},
		}},
		{name: "c_float8", typ: "float8", row1: "1.7976931348623157e308", row3: "'-Infinity'", argCases: []argCase{
			{"float64", 0.1}, {"float32", float32(0.1)}, {"string", "0.1"}, {"pgtype.Numeric", small},
			{"int64 large", int64(1) << 60}, {"named float", myFloat(0.7)}, {"pgtype.Float8", pgtype.Float8{Float64: 1, Valid: true}},
		}},
		{name: "c_bool", typ: "bool", row1: "true", row3: "false", argCases: []argCase{
			{"bool", true}, {"string t", "t"}, {"string yes", "yes"}, {"pgtype.Bool", pgtype.Bool{Bool: false, Valid: true}},
			{"named bool", myBool(true)}, {"int64", int64(1)}, {"*bool nil", (*bool)(nil)},
		}},
		{name: "c_text", typ: "text", row1: `'héllo, "world" \ '`, row3: "''", argCases: []argCase{
			{"string", "héllo"}, {"bytes", []byte("bytes")}, {"named string", myString("m")}, {"int64", int64(5)},
			{"time Berlin (Time.String)", wall}, {"time UTC", utc}, {"time fixed 0", fixed0}, {"duration (Stringer)", 90 * time.Second},
			{"pgtype.Text", pgtype.Text{String: "t", Valid: true}}, {"json.RawMessage", json.RawMessage(`{"a":1}`)},
			{"float64", 1.5}, {"bool", true}, {"uuid [16]byte", uuid}, {"net.IP", net.IPv4(1, 2, 3, 4).To4()},
			{"netip.Prefix", netip.MustParsePrefix("10.0.0.0/8")}, {"pgtype.UUID", pgtype.UUID{Bytes: uuid, Valid: true}},
			{"pgtype.Numeric", num}, {"map", map[string]any{"a": 1}}, {"struct", jsonDoc{A: 1}},
			{"empty bytes", []byte{}}, {"NUL-free unicode", "日本語"}, {"named int with String", colorRed},
		}},
		{name: "c_varchar", typ: "varchar(20)", row1: "'var'", row3: "''", argCases: []argCase{
			{"string", "var"}, {"too long", strings.Repeat("x", 21)}, {"bytes", []byte("b")},
		}},
		{name: "c_char", typ: "char(5)", row1: "'ab'", row3: "''", argCases: []argCase{
			{"string", "ab"}, {"too long", "abcdef"}, {"trailing spaces", "abcde   "},
		}},
		{name: "c_bytea", typ: "bytea", row1: `'\x00ff10'`, row3: `'\x'`, argCases: []argCase{
			{"bytes", []byte{0, 255, 16}}, {"empty bytes", []byte{}}, {"nil bytes", []byte(nil)}, {"string hex", `\x0102`},
			{"string escape", "ab\\\\c"}, {"json.RawMessage", json.RawMessage("raw")}, {"named bytes", myBytes{1}},
			{"json.RawMessage with backslash", json.RawMessage(`"a\nb"`)},
			{"uuid [16]byte", uuid}, {"int64", int64(1)},
		}},
		{name: "c_uuid", typ: "uuid", row1: "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", row3: "'00000000-0000-0000-0000-000000000000'", argCases: []argCase{
			{"string", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, {"string braces", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"},
			{"[16]byte", uuid}, {"named [16]byte", myUUID(uuid)}, {"pgtype.UUID", pgtype.UUID{Bytes: uuid, Valid: true}},
			{"pgtype.UUID null", pgtype.UUID{}}, {"16 bytes", uuid[:]}, {"invalid", "nope"},
		}},
		{name: "c_json", typ: "json", row1: `'{"b": 1,  "a": [true, null]}'`, row3: "'null'", argCases: jsonCases(wall, num, uuid)},
		{name: "c_jsonb", typ: "jsonb", row1: `'{"b": 1, "a": [true, null]}'`, row3: `'"str"'`, argCases: jsonCases(wall, num, uuid)},
		{name: "c_ts", typ: "timestamp", row1: "'2024-02-29 13:14:15.123456'", row3: "'infinity'", argCases: timeCases(wall, utc, fixed0, west)},
		{name: "c_tstz", typ: "timestamptz", row1: "'2024-02-29 13:14:15.123456+05:30'", row3: "'-infinity'", argCases: timeCases(wall, utc, fixed0, west)},
		{name: "c_tsdomain", typ: "tsdom", row1: "'2024-02-29 13:14:15.123456+05:30'", row3: "'infinity'", argCases: timeCases(wall, utc, fixed0, west)},
		{name: "c_date", typ: "date", row1: "'2024-02-29'", row3: "'infinity'", argCases: append(timeCases(wall, utc, fixed0, west),
			argCase{"pgtype.Date", pgtype.Date{Time: time.Date(2023, 1, 2, 0, 0, 0, 0, time.UTC), Valid: true}},
			argCase{"pgtype.Date -infinity", pgtype.Date{InfinityModifier: pgtype.NegativeInfinity, Valid: true}})},
		{name: "c_time", typ: "time", row1: "'13:14:15.5'", row3: "'24:00:00'", argCases: []argCase{
			{"time Berlin", wall}, {"time west", west}, {"string", "12:00"}, {"pgtype.Time", pgtype.Time{Microseconds: 3600e6 + 1, Valid: true}},
			{"duration", time.Hour},
		}},
		{name: "c_interval", typ: "interval", row1: "'1 year 2 mons 3 days 04:05:06.789'", row3: "'-1 days -00:00:01'", argCases: []argCase{
			{"duration", 90*time.Minute + time.Microsecond}, {"duration ns", time.Nanosecond}, {"negative duration", -36 * time.Hour},
			{"pgtype.Interval", pgtype.Interval{Months: 14, Days: -3, Microseconds: -1, Valid: true}}, {"string", "1 day"},
			{"int64", int64(5)}, {"named duration", myDuration(time.Second)},
		}},
		{name: "c_inet", typ: "inet", row1: "'192.168.1.5/24'", row3: "'::ffff:1.2.3.4/128'", argCases: []argCase{
			{"net.IP 16 bytes", net.ParseIP("192.168.0.1")}, {"net.IP 4 bytes", net.IPv4(192, 168, 0, 1).To4()},
			{"net.IP v6", net.ParseIP("2001:db8::1")}, {"netip.Addr", netip.MustParseAddr("10.0.0.1")},
			{"netip.Prefix", netip.MustParsePrefix("10.0.0.0/8")}, {"*net.IPNet", &net.IPNet{IP: net.IPv4(10, 1, 2, 3).To4(), Mask: net.CIDRMask(16, 32)}},
			{"string", "10.1.2.3/16"}, {"nil net.IP", net.IP(nil)}, {"zero netip.Addr", netip.Addr{}},
		}},
		{name: "c_jdomain", typ: "jdoc", row1: `'{"d": [1]}'`, row3: "'[]'", argCases: []argCase{
			{"json.RawMessage", json.RawMessage(`{"d": 2}`)}, {"string", `{"s": 1}`}, {"bytes", []byte(`{"b": 1}`)},
			{"map", map[string]any{"m": true}}, {"struct", jsonDoc{A: 3}}, {"int64", int64(4)}, {"float32", float32(0.1)},
			{"[]int64", []int64{1}}, {"time", wall}, {"pgtype.Numeric", num},
		}},
		{name: "c_posint", typ: "posint", row1: "7", row3: "1", argCases: []argCase{
			{"int64", int64(5)}, {"int32", int32(6)}, {"string", "7"}, {"float64", 8.0}, {"uint64", uint64(9)},
			{"named int", myInt(10)}, {"zero violates check", 0}, {"pgtype.Int4", pgtype.Int4{Int32: 11, Valid: true}},
			{"pgtype.Numeric", pgtype.Numeric{Int: big.NewInt(12), Valid: true}}, {"duration", time.Duration(13)},
		}},
		{name: "c_mood", typ: "mood", row1: "'happy'", row3: "'sad'", argCases: []argCase{
			{"string", "happy"}, {"named string", myString("ok")}, {"named int with String", colorRed}, {"bogus", "bogus"}, {"pgtype.Text", pgtype.Text{String: "sad", Valid: true}},
			{"bytes", []byte("ok")},
		}},
		{name: "c_int4arr", typ: "int4[]", row1: "'{1,NULL,3}'", row3: "'{{1,2},{3,4}}'", argCases: []argCase{
			{"[]int64", []int64{1, 2}}, {"[]int32", []int32{3}}, {"[]*int64", []*int64{&one, nil, &three}},
			{"[][]int64", [][]int64{{1, 2}, {3, 4}}}, {"[][]int64 of nil rows", [][]int64{nil, nil}},
			{"pgtype.Array 2x2", pgtype.Array[int32]{Elements: []int32{1, 2, 3, 4}, Dims: []pgtype.ArrayDimension{{Length: 2, LowerBound: 1}, {Length: 2, LowerBound: 1}}, Valid: true}},
			{"pgtype.Array lower bound 0", pgtype.Array[int32]{Elements: []int32{1, 2}, Dims: []pgtype.ArrayDimension{{Length: 2, LowerBound: 0}}, Valid: true}},
			{"pgtype.FlatArray", pgtype.FlatArray[int16]{5}}, {"string", "{1,2}"}, {"empty", []int64{}}, {"nil", []int64(nil)},
			{"[]any", []any{1, nil}}, {"out of range", []int64{math.MaxInt64}}, {"[]uint64", []uint64{1}},
			{"[]float64", []float64{1.5}}, {"[3]int32", [3]int32{7, 8, 9}}, {"[]string", []string{"1", "2"}},
		}},
		{name: "c_textarr", typ: "text[]", row1: `'{"a b",NULL,"c,d","\"q\""}'`, row3: "'{}'", argCases: []argCase{
			{"[]string", []string{"a b", "", "c,d", `"q"`, "NULL", `back\slash`}}, {"[]*string", []*string{&s, nil}},
			{"[][]string", [][]string{{"a", "b"}, {"c", "d"}}}, {"pgtype.FlatArray", pgtype.FlatArray[string]{"x"}},
			{"[]pgtype.Text", []pgtype.Text{{String: "t", Valid: true}, {}}}, {"string", "{a,b}"}, {"[][]byte", [][]byte{[]byte("b"), nil}},
			{"[]named string", []myString{"n"}}, {"[]int64", []int64{1}}, {"[]time.Time", []time.Time{wall}},
		}},
	}
}

func jsonCases(wall time.Time, num pgtype.Numeric, uuid [16]byte) []argCase {
	return []argCase{
		{"bytes", []byte(`{"b": 1,  "a": 2}`)}, {"string", `{"s": "x"}`}, {"json.RawMessage", json.RawMessage(`[1, 2]`)},
		{"map", map[string]any{"k": []any{1.5, "v", nil}}}, {"struct", jsonDoc{A: 1, B: "b"}}, {"*struct", &jsonDoc{A: 2}},
		{"pointer-receiver MarshalJSON", &ptrMarshaler{N: 1}}, {"[]int64", []int64{1, 2}}, {"[]string", []string{"a"}},
		{"float32", float32(0.1)}, {"float64", 0.1}, {"int64", int64(5)}, {"bool", true}, {"time", wall},
		{"pgtype.Numeric", num}, {"pgtype.Float4", pgtype.Float4{Float32: 0.1, Valid: true}}, {"[]any", []any{1, "a"}},
		{"map[string]string", map[string]string{"k": "v"}}, {"null NullString", sql.NullString{}}, {"[]struct", []jsonDoc{{A: 1}}},
		{"invalid JSON string", "{"}, {"uuid", uuid}, {"[]float32", []float32{0.1}}, {"empty map", map[string]int{}},
		{"[]time.Time", []time.Time{wall}}, {"duration", time.Second}, {"nil slice", []int64(nil)},
	}
}

func timeCases(wall, utc, fixed0, west time.Time) []argCase {
	return []argCase{
		{"time Berlin", wall}, {"time UTC", utc}, {"time fixed 0", fixed0}, {"time west", west},
		{"time zero", time.Time{}}, {"string", "2024-01-01 10:00:00+02"}, {"*time.Time", &wall}, {"nil *time.Time", (*time.Time)(nil)},
		{"pgtype.Timestamp", pgtype.Timestamp{Time: time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC), Valid: true}},
		{"pgtype.Timestamptz Berlin", pgtype.Timestamptz{Time: wall, Valid: true}},
		{"pgtype.Timestamptz infinity", pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}},
		{"sql.NullTime", sql.NullTime{Time: west, Valid: true}}, {"time ns", time.Date(2024, 1, 1, 0, 0, 0, 999, time.UTC)},
		{"far past", time.Date(-100, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
}

// color is the Go "enum" pattern: a named integer with a String method.
type color int

const colorRed color = 1

func (c color) String() string { return "happy" }

// expectedDifference explains why forwarding may not behave as stdlib for
// value v sent as a parameter of type typ, or returns "". The client does
// not know the parameter type, so where pgx encodes one Go value in ways
// that no single protocol value reproduces for every type, forwarding
// picks the meaning the value has in its natural column type.
func expectedDifference(v any, typ string, errA, errB error) string {
	var pgErr *pgconn.PgError
	if errA != nil && !errors.As(errA, &pgErr) && errB == nil {
		return "permissive: stdlib cannot encode this Go value for this type, forwarding sends text PostgreSQL accepts"
	}
	jsonLike := map[string]bool{"json": true, "jsonb": true, "jsonb[]": true, "jdoc": true}
	switch x := v.(type) {
	case net.IP:
		if typ != "inet" && typ != "cidr" {
			return "pgx writes a net.IP's raw bytes (its underlying []byte) outside inet and cidr; forwarding sends the address"
		}
	case netip.Addr:
		if !x.IsValid() && typ != "inet" && typ != "cidr" {
			return "pgx sends a zero netip.Addr as NULL into inet but as its String() elsewhere; forwarding sends NULL"
		}
		if jsonLike[typ] {
			return "pgx marshals network values as JSON strings; forwarding sends the inet text"
		}
	case netip.Prefix, *net.IPNet:
		if jsonLike[typ] {
			return "pgx marshals network values as JSON strings; forwarding sends the inet text"
		}
	case color:
		if typ != "int2" && typ != "int4" && typ != "int8" && typ != "numeric" && typ != "numeric(10,3)" &&
			typ != "float4" && typ != "float8" && typ != "posint" && !jsonLike[typ] {
			return "pgx encodes a named integer type through its String method into text and unknown types, as an integer elsewhere; forwarding sends the integer"
		}
	case pgtype.Numeric:
		if x.Exp < 0 && (typ == "int2" || typ == "int4" || typ == "int8") {
			return "pgx converts an integral pgtype.Numeric such as 1.0 to an integer itself; forwarded as numeric text, which integer input rejects"
		}
	case pgtype.Array[int32]:
		if jsonLike[typ] {
			return "pgx marshals a pgtype.Array struct as JSON and sends a multi-dimensional one as such into jsonb[]; forwarding sends nested slices"
		}
	case pgtype.Timestamp, pgtype.Date, pgtype.Float4:
		if typ == "tsdom" || typ == "jdoc" || typ == "posint" || typ == "mood" {
			return "for a parameter type pgx does not know (enum, domain), pgx sends the text of the value's own pgtype; forwarding sends what Value() returns"
		}
	case json.RawMessage:
		if typ == "uuid" || strings.HasSuffix(typ, "[]") || (typ == "bytea" && strings.Contains(string(x), `\`)) {
			return "json.RawMessage travels as text, its meaning for json, jsonb and their domains; pgx reads it as its underlying []byte for bytea, uuid and arrays"
		}
	case []jsonDoc:
		if typ == "jsonb[]" {
			return "a slice of structs travels as one JSON document; pgx sends it as an array of documents into json[] and jsonb[]"
		}
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Array && rv.Len() == 16 && rv.Type().Elem().Kind() == reflect.Uint8 && typ != "uuid" {
		return "[16]byte travels as a uuid; pgx treats it as a uuid only for uuid parameters, as 16 numbers elsewhere"
	}
	return ""
}

func TestTypeMatrix(t *testing.T) {
	c := pgtest.StartT(t, pgtest.Options{})
	// A session time zone that is neither UTC nor a whole hour away, so
	// that zone-less timestamp text and timestamptz output are put to test.
	dsn := c.Primary.DSN("") + "&timezone=Asia/Kolkata"
	std, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { std.Close() })
	fwd := openHarness(dsn)
	t.Cleanup(func() { fwd.Close() })

	cols := matrixColumns(t)
	setupMatrix(t, std, cols)

	t.Run("result metadata and driver values", func(t *testing.T) { testResultValues(t, std, fwd) })
	t.Run("scan destinations", func(t *testing.T) { testScanDestinations(t, std, fwd, cols) })
	t.Run("insert arguments", func(t *testing.T) { testInsertArguments(t, std, fwd, cols) })
	t.Run("parameter matrix", func(t *testing.T) { testParameterMatrix(t, std, fwd, cols) })
	t.Run("errors", func(t *testing.T) { testErrors(t, std, fwd) })
}

func setupMatrix(t *testing.T, db *sql.DB, cols []matrixColumn) {
	t.Helper()
	var defs, names, row1, row2, row3 []string
	for _, c := range cols {
		defs = append(defs, c.name+" "+c.typ)
		names = append(names, c.name)
		row1 = append(row1, "("+c.row1+")::"+c.typ)
		row2 = append(row2, "NULL")
		row3 = append(row3, "("+c.row3+")::"+c.typ)
	}
	stmts := []string{
		"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
		"CREATE DOMAIN jdoc AS jsonb",
		"CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)",
		"CREATE DOMAIN tsdom AS timestamptz",
		fmt.Sprintf("CREATE TABLE matrix (id int PRIMARY KEY, %s)", strings.Join(defs, ", ")),
		fmt.Sprintf("CREATE TABLE arg_std (id int PRIMARY KEY, %s)", strings.Join(defs, ", ")),
		fmt.Sprintf("CREATE TABLE arg_fwd (id int PRIMARY KEY, %s)", strings.Join(defs, ", ")),
		fmt.Sprintf("INSERT INTO matrix (id, %s) VALUES (1, %s), (2, %s), (3, %s)", strings.Join(names, ", "),
			strings.Join(row1, ", "), strings.Join(row2, ", "), strings.Join(row3, ", ")),
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// testResultValues compares what database/sql reports about the columns
// and the driver values (scanned into any) of every row.
func testResultValues(t *testing.T, std, fwd *sql.DB) {
	queries := []string{
		"SELECT * FROM matrix ORDER BY id",
		// Types stdlib reads in binary or treats specially that the table
		// does not have, and a result without rows.
		"SELECT 1::oid AS o, '5'::xid AS x, '<a/>'::xml AS x2, '{1.5,2}'::float8[] AS fa, 'x'::name AS n, '1'::\"char\" AS qc, '10101'::varbit(8) AS vb, 1.5::money AS m, '(1,2)'::point AS p, '[1,5)'::int4range AS r",
		"SELECT 1 AS a WHERE false",
		"SELECT",
	}
	for _, q := range queries {
		a := readAll(t, std, q)
		b := readAll(t, fwd, q)
		if !reflect.DeepEqual(a.meta, b.meta) {
			t.Errorf("%s: column metadata differs:\nstdlib  %+v\nforward %+v", q, a.meta, b.meta)
		}
		if len(a.rows) != len(b.rows) {
			t.Fatalf("%s: %d rows through stdlib, %d forwarded", q, len(a.rows), len(b.rows))
		}
		for i := range a.rows {
			for j := range a.rows[i] {
				if !same(a.rows[i][j], b.rows[i][j]) {
					t.Errorf("%s: row %d column %s: stdlib %T %#v, forwarded %T %#v",
						q, i+1, a.meta[j].Name, a.rows[i][j], a.rows[i][j], b.rows[i][j], b.rows[i][j])
				}
			}
		}
	}
}

type columnMeta struct {
	Name              string
	DatabaseTypeName  string
	Length            int64
	HasLength         bool
	Precision, Scale  int64
	HasDecimal        bool
	ScanType          string
	Nullable, HasNull bool
}

type readResult struct {
	meta []columnMeta
	rows [][]any
}

func readAll(t *testing.T, db *sql.DB, q string) readResult {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	var r readResult
	for _, ct := range types {
		m := columnMeta{Name: ct.Name(), DatabaseTypeName: ct.DatabaseTypeName(), ScanType: fmt.Sprint(ct.ScanType())}
		m.Length, m.HasLength = ct.Length()
		m.Precision, m.Scale, m.HasDecimal = ct.DecimalSize()
		m.Nullable, m.HasNull = ct.Nullable()
		r.meta = append(r.meta, m)
	}
	for rows.Next() {
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("%s: scan: %v", q, err)
		}
		r.rows = append(r.rows, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

// scanDest makes a fresh destination and reads back what was scanned.
type scanDest struct {
	name string
	make func(m *pgtype.Map) (dest any, result func() any)
}

func ptrDest[T any](name string) scanDest {
	return scanDest{name, func(*pgtype.Map) (any, func() any) {
		p := new(T)
		return p, func() any { return *p }
	}}
}

func mapDest[T any](name string) scanDest {
	return scanDest{name, func(m *pgtype.Map) (any, func() any) {
		p := new(T)
		return m.SQLScanner(p), func() any { return *p }
	}}
}

var scanDests = []scanDest{
	ptrDest[any]("any"), ptrDest[string]("string"), ptrDest[[]byte]("[]byte"), ptrDest[int64]("int64"),
	ptrDest[int32]("int32"), ptrDest[int16]("int16"), ptrDest[int]("int"), ptrDest[uint64]("uint64"),
	ptrDest[float64]("float64"), ptrDest[float32]("float32"), ptrDest[bool]("bool"), ptrDest[time.Time]("time.Time"),
	ptrDest[sql.NullString]("sql.NullString"), ptrDest[sql.NullInt64]("sql.NullInt64"), ptrDest[sql.NullInt32]("sql.NullInt32"),
	ptrDest[sql.NullFloat64]("sql.NullFloat64"), ptrDest[sql.NullBool]("sql.NullBool"), ptrDest[sql.NullTime]("sql.NullTime"),
	ptrDest[sql.Null[string]]("sql.Null[string]"), ptrDest[*string]("*string"), ptrDest[*int64]("*int64"),
	ptrDest[*time.Time]("*time.Time"), ptrDest[json.RawMessage]("json.RawMessage"), ptrDest[myString]("named string"),
	ptrDest[pgtype.Numeric]("pgtype.Numeric"), ptrDest[pgtype.UUID]("pgtype.UUID"), ptrDest[pgtype.Interval]("pgtype.Interval"),
	ptrDest[pgtype.Text]("pgtype.Text"), ptrDest[pgtype.Timestamptz]("pgtype.Timestamptz"), ptrDest[pgtype.Timestamp]("pgtype.Timestamp"),
	ptrDest[pgtype.Date]("pgtype.Date"), ptrDest[pgtype.Time]("pgtype.Time"), ptrDest[pgtype.Int8]("pgtype.Int8"),
	ptrDest[pgtype.Int4]("pgtype.Int4"), ptrDest[pgtype.Float8]("pgtype.Float8"), ptrDest[pgtype.Float4]("pgtype.Float4"),
	ptrDest[pgtype.Bool]("pgtype.Bool"), ptrDest[map[string]any]("map (unsupported)"),
	mapDest[[]int64]("SQLScanner []int64"), mapDest[[]*int32]("SQLScanner []*int32"), mapDest[[]string]("SQLScanner []string"),
	mapDest[pgtype.FlatArray[string]]("SQLScanner FlatArray[string]"), mapDest[pgtype.Array[int32]]("SQLScanner Array[int32]"),
	mapDest[netip.Prefix]("SQLScanner netip.Prefix"), mapDest[[16]byte]("SQLScanner [16]byte"), mapDest[time.Duration]("SQLScanner time.Duration"),
	// Destinations database/sql only fills through driver.RowsColumnScanner
	// (Go 1.27, stdlib's sql_go1.27.go): until then both drivers fail alike;
	// from then on this fails until Rows implements it too.
	ptrDest[[]int64]("[]int64"), ptrDest[[]string]("[]string"), ptrDest[netip.Prefix]("netip.Prefix"),
	ptrDest[pgtype.Range[pgtype.Int4]]("pgtype.Range"),
}

// testScanDestinations scans every cell into every destination type through
// both drivers; values and errors must agree.
func testScanDestinations(t *testing.T, std, fwd *sql.DB, cols []matrixColumn) {
	mStd, mFwd := pgtype.NewMap(), pgtype.NewMap()
	for _, c := range cols {
		for id := 1; id <= 3; id++ {
			q := fmt.Sprintf("SELECT %s FROM matrix WHERE id = $1", c.name)
			for _, d := range scanDests {
				destA, resA := d.make(mStd)
				destB, resB := d.make(mFwd)
				errA := std.QueryRow(q, id).Scan(destA)
				errB := fwd.QueryRow(q, id).Scan(destB)
				where := fmt.Sprintf("%s row %d into %s", c.name, id, d.name)
				if errString(errA) != errString(errB) {
					t.Errorf("%s: stdlib error %v, forwarded error %v", where, errA, errB)
					continue
				}
				if errA == nil && !same(resA(), resB()) {
					t.Errorf("%s: stdlib %#v, forwarded %#v", where, resA(), resB())
				}
			}
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// testInsertArguments inserts every argument case through both drivers into
// twin tables and compares the stored values as text.
func testInsertArguments(t *testing.T, std, fwd *sql.DB, cols []matrixColumn) {
	id := 0
	for _, c := range cols {
		for _, ac := range c.argCases {
			id++
			where := fmt.Sprintf("%s/%s", c.name, ac.name)
			q := "INSERT INTO %s (id, " + c.name + ") VALUES ($1, $2)"
			var errA, errB error
			withFreshConns(t, std, fwd, func(a, b *sql.Conn) {
				_, errA = a.ExecContext(context.Background(), fmt.Sprintf(q, "arg_std"), id, ac.v)
				_, errB = b.ExecContext(context.Background(), fmt.Sprintf(q, "arg_fwd"), id, ac.v)
			})
			var a, b string
			if errA == nil && errB == nil {
				a = storedText(t, std, "arg_std", c.name, id)
				b = storedText(t, std, "arg_fwd", c.name, id)
			}
			compareOutcome(t, where+" into "+c.typ, ac.v, c.typ, a, errA, b, errB)
		}
	}
}

// withFreshConns runs f on new connections of both pools: pgx memoizes
// encode plans per connection under keys that lose the Go type (its
// reflection wrapper for slices), so the outcome of an argument can depend
// on the arguments a connection encoded before.
func withFreshConns(t *testing.T, std, fwd *sql.DB, f func(a, b *sql.Conn)) {
	t.Helper()
	ctx := context.Background()
	std.SetMaxIdleConns(0)
	fwd.SetMaxIdleConns(0)
	defer std.SetMaxIdleConns(2)
	defer fwd.SetMaxIdleConns(2)
	a, err := std.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := fwd.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f(a, b)
}

// sqlStateClass maps invalid_binary_representation to
// invalid_text_representation: forwarding sends some values as text that
// stdlib sends in binary, and PostgreSQL rejects bad input with the code of
// the input function that read it.
func sqlStateClass(code string) string {
	if code == "22P03" {
		return "22P02"
	}
	return code
}

// compareOutcome requires the same outcome from both drivers (both
// succeed with the same result, or both fail, with the same SQLSTATE when
// both are PostgreSQL errors), unless expectedDifference explains why not.
func compareOutcome(t *testing.T, where string, v any, typ string, a string, errA error, b string, errB error) {
	t.Helper()
	same := (errA == nil) == (errB == nil) && a == b
	if same && errA != nil {
		var pa, pb *pgconn.PgError
		if errors.As(errA, &pa) && errors.As(errB, &pb) && sqlStateClass(pa.Code) != sqlStateClass(pb.Code) {
			same = false
		}
	}
	if same {
		return
	}
	if reason := expectedDifference(v, typ, errA, errB); reason != "" {
		t.Logf("%s (%T): expected difference: %s\n\tstdlib  %s / %v\n\tforward %s / %v", where, v, reason, a, errA, b, errB)
		return
	}
	t.Errorf("%s (%T):\n\tstdlib  %s / %v\n\tforward %s / %v", where, v, a, errA, b, errB)
}

func storedText(t *testing.T, db *sql.DB, table, col string, id int) string {
	t.Helper()
	var s *string
	if err := db.QueryRow(fmt.Sprintf("SELECT %s::text FROM %s WHERE id = $1", col, table), id).Scan(&s); err != nil {
		t.Fatalf("read %s.%s: %v", table, col, err)
	}
	if s == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *s)
}

// testParameterMatrix sends every argument case into every column type, as
// SELECT $1::type::text, through both drivers: this is where a value meets
// parameter types it was not meant for, and pgx's choices depend on the
// parameter type most.
func testParameterMatrix(t *testing.T, std, fwd *sql.DB, cols []matrixColumn) {
	types := []string{"float8[]", "timestamptz[]", "bytea[]", "numeric[]", "jsonb[]", "uuid[]", "int8range", "cidr", "bpchar", "name"}
	for _, c := range cols {
		types = append(types, c.typ)
	}
	ctx := context.Background()
	for _, c := range cols {
		for _, ac := range c.argCases {
			withFreshConns(t, std, fwd, func(connA, connB *sql.Conn) {
				for _, typ := range types {
					q := fmt.Sprintf("SELECT $1::%s::text", typ)
					var a, b *string
					errA := connA.QueryRowContext(ctx, q, ac.v).Scan(&a)
					errB := connB.QueryRowContext(ctx, q, ac.v).Scan(&b)
					compareOutcome(t, c.name+"/"+ac.name+" as "+typ, ac.v, typ, show(a), errA, show(b), errB)
				}
			})
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *s)
}

// testErrors checks that PostgreSQL errors arrive as the same *pgconn.PgError.
func testErrors(t *testing.T, std, fwd *sql.DB) {
	for _, q := range []string{
		"SELECT 1/0",
		"INSERT INTO matrix (id) VALUES (1)",
		"SELECT nope FROM matrix",
		"SELECT 'x'::int",
	} {
		_, errA := std.Exec(q, []any{}...)
		_, errB := fwd.Exec(q)
		var pa, pb *pgconn.PgError
		if !errors.As(errA, &pa) || !errors.As(errB, &pb) {
			t.Errorf("%s: stdlib %v, forwarded %v", q, errA, errB)
			continue
		}
		if !reflect.DeepEqual(*pa, *pb) {
			t.Errorf("%s:\nstdlib  %+v\nforward %+v", q, *pa, *pb)
		}
	}
}
