package callbacks

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassifyLocal(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("query: %w", &pgconn.PgError{Code: code}) }
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
		want localFailure
	}{
		{"read only", nil, pg("25006"), failReadOnly},
		{"unlogged in recovery", nil, pg("0A000"), failReadOnly},
		{"admin shutdown", nil, pg("57P01"), failUnreachable},
		{"cannot connect now", nil, pg("57P03"), failUnreachable},
		{"recovery conflict", nil, pg("40001"), failConflict},
		{"unique violation", nil, pg("23505"), failOther},
		{"connection refused", nil, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), failUnreachable},
		{"reset", nil, syscall.ECONNRESET, failUnreachable},
		{"eof", nil, io.ErrUnexpectedEOF, failUnreachable},
		{"bad conn", nil, driver.ErrBadConn, failUnreachable},
		{"caller's deadline", nil, context.DeadlineExceeded, failOther},
		{"caller's context ended", cancelled, syscall.ECONNRESET, failOther},
		{"other", nil, errors.New("scan"), failOther},
	} {
		ctx := c.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		if got := classifyLocal(ctx, c.err); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
