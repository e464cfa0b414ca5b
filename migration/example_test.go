package migration_test

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/flypg/flypg/migration"
)

func ExampleUp() {
	var db *sql.DB // a connection pool to the primary
	if db == nil {
		return // (this example only shows the call)
	}
	if err := migration.Up(context.Background(), db); err != nil {
		fmt.Println(err)
	}
}

func ExampleAll() {
	for _, m := range migration.All() {
		fmt.Println(m.Version, m.Name)
	}
	// Output: 1 fly_watch_for_lsn_change
}
