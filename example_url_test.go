package flypg_test

import (
	"fmt"

	"github.com/flypg/flypg"
)

// The DATABASE_URL that "fly postgres attach" sets, for an instance in a
// replica region: it reads from the nearest database, its region's
// replica, on Fly Postgres's direct port.
func ExampleConfigureURL() {
	url, err := flypg.ConfigureURL("postgres://app:secret@top2.nearest.of.my-db.internal:5432/app", flypg.URLConfig{
		Region:        "fra", // fly.Region()
		PrimaryRegion: "iad", // fly.PrimaryRegion()
		Production:    true,  // on Fly.io: os.Getenv("FLY_APP_NAME") != ""
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(url)
	// Output:
	// postgres://app:secret@top1.nearest.of.my-db.internal:5433/app
}
