package wire

import (
	"database/sql/driver"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// This file ports initValueFuncs of github.com/jackc/pgx/v5/stdlib (v5.12.0,
// sql.go) unchanged in behavior: per column OID and format, the conversion
// from the raw value to the driver.Value that stdlib's Rows.Next produces.
// Keep it in step with stdlib when pgx is upgraded.

type rowValueFunc func(src []byte) (driver.Value, error)

func valueFuncs(m *pgtype.Map, fields []pgconn.FieldDescription) []rowValueFunc {
	funcs := make([]rowValueFunc, len(fields))
	for i, fd := range fields {
		funcs[i] = valueFunc(m, fd.DataTypeOID, fd.Format)
	}
	return funcs
}

func valueFunc(m *pgtype.Map, dataTypeOID uint32, format int16) rowValueFunc {
	switch dataTypeOID {
	case pgtype.BoolOID:
		var d bool
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return d, err
		}
	case pgtype.ByteaOID:
		var d []byte
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return d, err
		}
	case pgtype.CIDOID, pgtype.OIDOID, pgtype.XIDOID:
		var d pgtype.Uint32
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			if err != nil {
				return nil, err
			}
			return d.Value()
		}
	case pgtype.DateOID:
		var d pgtype.Date
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			if err != nil {
				return nil, err
			}
			return d.Value()
		}
	case pgtype.Float4OID:
		var d float32
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return float64(d), err
		}
	case pgtype.Float8OID:
		var d float64
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return d, err
		}
	case pgtype.Int2OID:
		var d int16
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return int64(d), err
		}
	case pgtype.Int4OID:
		var d int32
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return int64(d), err
		}
	case pgtype.Int8OID:
		var d int64
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return d, err
		}
	case pgtype.JSONOID, pgtype.JSONBOID:
		var d []byte
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			if err != nil {
				return nil, err
			}
			return d, nil
		}
	case pgtype.TimestampOID:
		var d pgtype.Timestamp
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			if err != nil {
				return nil, err
			}
			return d.Value()
		}
	case pgtype.TimestamptzOID:
		var d pgtype.Timestamptz
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			if err != nil {
				return nil, err
			}
			return d.Value()
		}
	case pgtype.XMLOID:
		var d []byte
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			if err != nil {
				return nil, err
			}
			return d, nil
		}
	default:
		var d string
		scanPlan := m.PlanScan(dataTypeOID, format, &d)
		return func(src []byte) (driver.Value, error) {
			err := scanPlan.Scan(src, &d)
			return d, err
		}
	}
}
