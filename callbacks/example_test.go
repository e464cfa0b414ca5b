package callbacks_test

import (
	"fmt"

	"github.com/flypg/flypg/callbacks"
)

// IsRead decides whether raw SQL may run on the local replica; anything it
// is not sure about goes to the primary.
func ExampleIsRead() {
	for _, sql := range []string{
		"SELECT * FROM orders WHERE id = $1",
		"SELECT * FROM orders WHERE id = $1 FOR UPDATE",
		"WITH o AS (INSERT INTO orders (total) VALUES (1) RETURNING id) SELECT id FROM o",
		"SELECT 'insert into ignored' AS text",
		"UPDATE orders SET total = 2",
	} {
		fmt.Println(callbacks.IsRead(sql), sql)
	}
	// Output:
	// true SELECT * FROM orders WHERE id = $1
	// false SELECT * FROM orders WHERE id = $1 FOR UPDATE
	// false WITH o AS (INSERT INTO orders (total) VALUES (1) RETURNING id) SELECT id FROM o
	// true SELECT 'insert into ignored' AS text
	// false UPDATE orders SET total = 2
}
