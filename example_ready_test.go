package flypg_test

import (
	"errors"
	"log"
	"net/http"
	"time"

	"github.com/flypg/flypg"
)

// A readiness endpoint: 200 while the local database answers in the role
// the region expects and the executor serves, 503 with the failed checks
// otherwise.
func ExamplePlugin_Ready() {
	plugin := flypg.New(flypg.ConfigFromEnv()) // installed with db.Use
	http.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := plugin.Ready(r.Context()); err != nil {
			var nr *flypg.NotReadyError
			if errors.As(err, &nr) {
				w.Header().Set("Flypg-Failed-Check", nr.Check)
			}
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
}

// Where reads run now: on the local replica, or on the primary while the
// replica is unreachable or too far behind.
func ExamplePlugin_ReadMode() {
	plugin := flypg.New(flypg.ConfigFromEnv()) // installed with db.Use
	if m := plugin.ReadMode(); m.Primary {
		log.Printf("reads on the primary since %s: %s", m.Since.Format(time.RFC3339), m.Reason)
	}
}
