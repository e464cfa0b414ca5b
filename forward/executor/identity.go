package executor

import (
	"context"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// querier runs a query of one row: a *pgx.Conn or a *pgxpool.Pool.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// identityOf reads the identity of the database q serves.
func identityOf(ctx context.Context, q querier) (protocol.Identity, error) {
	var sys int64
	var id protocol.Identity
	if err := q.QueryRow(ctx, protocol.IdentitySQL).Scan(&sys, &id.Database); err != nil {
		return protocol.Identity{}, err
	}
	id.SystemIdentifier = uint64(sys)
	return id, nil
}

// checkIdentity refuses a unit whose client replicates another database
// than the one this executor serves. q, if not nil, reads the executor's
// identity when the health checker has not yet.
func (x *Executor) checkIdentity(ctx context.Context, u *forwardpb.Unit, q querier) error {
	want := protocol.Identity{SystemIdentifier: u.GetSystemIdentifier(), Database: u.GetDatabase()}
	if want == (protocol.Identity{}) {
		return nil
	}
	have := x.ident.Load()
	if have == nil {
		if q == nil {
			return nil // checked once a connection is at hand
		}
		id, err := identityOf(ctx, q)
		if err != nil {
			setTrailer(ctx, trailer(protocol.OutcomeNotRun, 0))
			return status.Errorf(codes.Unavailable, "forward: read the primary's identity: %v", err)
		}
		x.ident.Store(&id)
		have = &id
	}
	if (want.SystemIdentifier == 0 || want.SystemIdentifier == have.SystemIdentifier) && (want.Database == "" || want.Database == have.Database) {
		return nil
	}
	setTrailer(ctx, refused(protocol.RefusalDatabase))
	return status.Errorf(codes.FailedPrecondition, "forward: database mismatch: the executor serves %v, the client's replica replicates %v; nothing ran", *have, want)
}
