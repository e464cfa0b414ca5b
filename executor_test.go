package flypg

import (
	"reflect"
	"testing"
	"time"
)

// TestExecutorConfigMapsEveryLimit: every field of executor.Config
// is either a limit of ExecutorConfig, carried over unchanged, or one the
// plugin sets itself — so that a limit added to the executor cannot be
// forgotten here.
func TestExecutorConfigMapsEveryLimit(t *testing.T) {
	setByPlugin := map[string]bool{
		"DSN": true, "Pool": true, "Calls": true, "Secret": true, "OldSecrets": true,
		"AllowUnauthenticated": true, "Logger": true, "ServerOptions": true, "SessionUnit": true,
	}
	var c ExecutorConfig
	cv := reflect.ValueOf(&c).Elem()
	for i := range cv.NumField() {
		f := cv.Field(i)
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			f.SetInt(int64(i+1) * int64(time.Second))
		case f.Kind() == reflect.Int:
			f.SetInt(int64(i + 1))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Kind() == reflect.String:
			f.SetString(cv.Type().Field(i).Name)
		default:
			t.Fatalf("ExecutorConfig.%s: unexpected kind %s", cv.Type().Field(i).Name, f.Kind())
		}
	}
	fv := reflect.ValueOf(c.executorConfig())
	mapped := 0
	for i := range fv.NumField() {
		name := fv.Type().Field(i).Name
		if setByPlugin[name] {
			continue
		}
		own := cv.FieldByName(name)
		if !own.IsValid() {
			t.Errorf("executor.Config.%s is neither in ExecutorConfig nor set by the plugin", name)
			continue
		}
		mapped++
		if !reflect.DeepEqual(own.Interface(), fv.Field(i).Interface()) {
			t.Errorf("ExecutorConfig.%s = %v maps to %v", name, own.Interface(), fv.Field(i).Interface())
		}
	}
	if mapped != cv.NumField() {
		t.Errorf("%d of ExecutorConfig's %d fields reach executor.Config", mapped, cv.NumField())
	}
}
