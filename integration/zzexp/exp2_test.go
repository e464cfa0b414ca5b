package zzexp

import (
	"context"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/flypg/flypg/forward"
	"github.com/flypg/flypg/pgtest"
)

func TestForwardLink(t *testing.T) {
	c := pgtest.StartT(t, pgtest.Options{})
	ctx := context.Background()
	x, err := forward.NewExecutor(ctx, forward.ExecutorConfig{DSN: c.Primary.DSN(""), Secret: "0123456789abcdef0123"})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go x.Serve(lis)
	l, _ := pgtest.NewLink("x", lis.Addr().String())
	defer l.Close()
	for _, rtt := range []time.Duration{0, 10 * time.Millisecond} {
		l.SetRTT(rtt)
		cl, _ := forward.NewClient(forward.ClientConfig{Target: l.Addr(), Secret: "0123456789abcdef0123"})
		db := cl.OpenDB()
		db.Exec("SELECT 1")
		db.Exec("CREATE TABLE IF NOT EXISTS b (v int)")
		for _, q := range []string{"SELECT 1", "ping", "INSERT INTO b VALUES ($1)"} {
			var xs []time.Duration
			for i := 0; i < 100; i++ {
				t0 := time.Now()
				if q == "ping" {
					cl.Ping(ctx)
				} else if q[0] == 'I' {
					if _, err := db.Exec(q, i); err != nil {
						t.Fatal(err)
					}
				} else {
					db.Exec(q)
				}
				xs = append(xs, time.Since(t0))
			}
			sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
			t.Logf("rtt %v %s: p50 %v p90 %v", rtt, q, xs[50], xs[90])
		}
		db.Close()
		cl.Close()
	}
}
