package lsn_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flypg/flypg/lsn"
)

func ExampleParse() {
	l, err := lsn.Parse("16/B374D848")
	if err != nil {
		panic(err)
	}
	fmt.Println(uint64(l), l)
	_, err = lsn.Parse("16-B374D848")
	fmt.Println(errors.Is(err, lsn.ErrSyntax))
	// Output:
	// 97500059720 16/B374D848
	// true
}

func ExampleLSN_Normalize() {
	// pg_current_wal_insert_lsn() just after a record that ended on a page
	// boundary points past the next page's 24-byte header.
	insert := lsn.MustParse("0/3002018")
	fmt.Println(insert.Normalize(lsn.DefaultSegmentSize))
	// Output: 0/3002000
}

func ExampleTracker() {
	// A Source reports replay progress; in production use
	// lsn.NewReplaySource(replicaDB). This one pretends replay is at 0/5000.
	src := lsn.SourceFunc(func(ctx context.Context, _ lsn.LSN) (lsn.Status, error) {
		return lsn.Status{Replayed: 0x5000, InRecovery: true}, nil
	})
	tr, err := lsn.NewTracker(lsn.Config{Source: src, Timeout: 50 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer tr.Close()

	fmt.Println(tr.Wait(context.Background(), 0x4F00)) // already replayed

	err = tr.Wait(context.Background(), 0x6000) // never replayed here
	var we *lsn.WaitError
	fmt.Println(errors.Is(err, lsn.ErrTimeout), errors.As(err, &we) && we.Seen == 0x5000)
	// Output:
	// <nil>
	// true true
}
