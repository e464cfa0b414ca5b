package fly_test

import (
	"fmt"

	"github.com/flypg/flypg/fly"
)

// The DATABASE_URL that "fly postgres attach" sets, adapted for an instance
// in a replica region (fra) and one in the primary region (iad). In an app
// the config would come from fly.Region(), fly.PrimaryRegion() and the
// app's own notion of production.
func ExampleConfigureURL() {
	for _, c := range []struct{ databaseURL, region string }{
		{"postgres://app:s3cr%2Ft@top2.nearest.of.my-db.internal:5432/app?sslmode=disable", "fra"},
		{"postgres://app:s3cr%2Ft@top2.nearest.of.my-db.internal:5432/app?sslmode=disable", "iad"},
		{"host=my-db.internal user=app dbname=app", "fra"}, // keyword/value strings work too
	} {
		url, err := fly.ConfigureURL(c.databaseURL, fly.URLConfig{
			Region:        c.region,
			PrimaryRegion: "iad",
			Production:    true,
		})
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(url)
	}
	// Output:
	// postgres://app:s3cr%2Ft@top1.nearest.of.my-db.internal:5433/app?sslmode=disable
	// postgres://app:s3cr%2Ft@top1.nearest.of.my-db.internal:5432/app?sslmode=disable
	// host=top1.nearest.of.my-db.internal port=5433 user=app dbname=app
}
