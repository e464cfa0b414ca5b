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
	const databaseURL = "postgres://app:s3cr%2Ft@top2.nearest.of.my-db.internal:5432/app?sslmode=disable"

	replica, err := fly.ConfigureURL(databaseURL, fly.URLConfig{
		Region:        "fra",
		PrimaryRegion: "iad",
		Production:    true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(replica)

	primary, err := fly.ConfigureURL(databaseURL, fly.URLConfig{
		Region:        "iad",
		PrimaryRegion: "iad",
		Production:    true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(primary)

	// Keyword/value strings work too.
	dsn, err := fly.ConfigureURL("host=my-db.internal user=app dbname=app", fly.URLConfig{
		Region:        "fra",
		PrimaryRegion: "iad",
		Production:    true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(dsn)

	// Output:
	// postgres://app:s3cr%2Ft@top1.nearest.of.my-db.internal:5433/app?sslmode=disable
	// postgres://app:s3cr%2Ft@top1.nearest.of.my-db.internal:5432/app?sslmode=disable
	// host=top1.nearest.of.my-db.internal port=5433 user=app dbname=app
}
