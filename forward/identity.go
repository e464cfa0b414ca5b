package forward

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
)

// Identity names a database across its primary and replicas: the cluster's
// system identifier (the same on a primary and every streaming replica of
// it, read with pg_control_system()) and the database's name. A replica
// region's client sends the identity of its local replica with every unit,
// and the executor refuses a unit whose identity is not that of the
// database it serves: the write would succeed on the primary and never
// show up on the replica.
type Identity struct {
	SystemIdentifier uint64
	Database         string
}

func (id Identity) String() string {
	return fmt.Sprintf("database %q of cluster %d", id.Database, id.SystemIdentifier)
}

// identityColumns read a connection's Identity: the system identifier
// (scan it into an int64) and the database name.
const identityColumns = `(SELECT system_identifier FROM pg_control_system()), current_database()`

// IdentitySQL reads a connection's Identity.
const IdentitySQL = `SELECT ` + identityColumns

// ReadIdentity reads the Identity of the database db is connected to.
func ReadIdentity(ctx context.Context, db *sql.DB) (Identity, error) {
	var sys int64
	var id Identity
	if err := db.QueryRowContext(ctx, IdentitySQL).Scan(&sys, &id.Database); err != nil {
		return Identity{}, fmt.Errorf("forward: read database identity: %w", err)
	}
	id.SystemIdentifier = uint64(sys)
	return id, nil
}

// querier runs a query of one row: a *pgx.Conn or a *pgxpool.Pool.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// identityOf reads the identity of the database q serves.
func identityOf(ctx context.Context, q querier) (Identity, error) {
	var sys int64
	var id Identity
	if err := q.QueryRow(ctx, IdentitySQL).Scan(&sys, &id.Database); err != nil {
		return Identity{}, err
	}
	id.SystemIdentifier = uint64(sys)
	return id, nil
}

// checkIdentity refuses a unit whose client replicates another database
// than the one this executor serves. q, if not nil, reads the executor's
// identity when the health checker has not yet.
func (x *Executor) checkIdentity(ctx context.Context, u *forwardpb.Unit, q querier) error {
	want := Identity{SystemIdentifier: u.GetSystemIdentifier(), Database: u.GetDatabase()}
	if want == (Identity{}) {
		return nil
	}
	have := x.ident.Load()
	if have == nil {
		if q == nil {
			return nil // checked once a connection is at hand
		}
		id, err := identityOf(ctx, q)
		if err != nil {
			setTrailer(ctx, trailer(outcomeNotRun, 0))
			return status.Errorf(codes.Unavailable, "forward: read the primary's identity: %v", err)
		}
		x.ident.Store(&id)
		have = &id
	}
	if (want.SystemIdentifier == 0 || want.SystemIdentifier == have.SystemIdentifier) && (want.Database == "" || want.Database == have.Database) {
		return nil
	}
	setTrailer(ctx, refused(refusalDatabase))
	return status.Errorf(codes.FailedPrecondition, "forward: database mismatch: the executor serves %v, the client's replica replicates %v; nothing ran", *have, want)
}
