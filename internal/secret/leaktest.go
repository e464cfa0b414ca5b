package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// Leaks renders v in every way a program might print or log it — fmt
// with the usual verbs, String and GoString if it has them, slog's text
// and JSON handlers — and returns the renderings that contain one of
// secrets (also hex- or base64-encoded). For tests.
func Leaks(v any, secrets ...string) []string {
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outs = append(outs, verb+": "+fmt.Sprintf(verb, v))
	}
	if s, ok := v.(fmt.Stringer); ok {
		outs = append(outs, "String: "+s.String())
	}
	if s, ok := v.(fmt.GoStringer); ok {
		outs = append(outs, "GoString: "+s.GoString())
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("config", "value", v)
		outs = append(outs, "slog: "+b.String())
	}
	var leaks []string
	for _, out := range outs {
		for _, s := range secrets {
			for _, form := range []string{s, hex.EncodeToString([]byte(s)), base64.StdEncoding.EncodeToString([]byte(s)), fmt.Sprint([]byte(s))[1:12]} {
				if strings.Contains(out, form) {
					leaks = append(leaks, out)
				}
			}
		}
	}
	return leaks
}
