package fly_test

import (
	"context"
	"fmt"
	"os"

	"github.com/flypg/flypg/fly"
)

func Example() {
	os.Setenv("FLY_REGION", "ams")
	os.Setenv("PRIMARY_REGION", "syd")
	defer os.Unsetenv("FLY_REGION")
	defer os.Unsetenv("PRIMARY_REGION")

	fmt.Println(fly.Region(), fly.PrimaryRegion(), fly.IsPrimary())

	ctx := fly.NoAwait(context.Background())
	fmt.Println(fly.IsNoAwait(ctx), fly.IsLocal(ctx))
	// Output:
	// ams syd false
	// true false
}
