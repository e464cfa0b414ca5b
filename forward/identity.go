package forward

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/flypg/flypg/forward/protocol"
)

// Identity is the database a client's local replica replicates, sent with
// every unit (ClientConfig.Identity); see protocol.Identity.
type Identity = protocol.Identity

// ReadIdentity reads the Identity of the database db is connected to.
func ReadIdentity(ctx context.Context, db *sql.DB) (Identity, error) {
	var sys int64
	var id Identity
	if err := db.QueryRowContext(ctx, protocol.IdentitySQL).Scan(&sys, &id.Database); err != nil {
		return Identity{}, fmt.Errorf("forward: read database identity: %w", err)
	}
	id.SystemIdentifier = uint64(sys)
	return id, nil
}
