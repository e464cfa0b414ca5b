package protocol

import "fmt"

// Identity names a database across its primary and replicas: the cluster's
// system identifier (the same on a primary and every streaming replica of
// it, read with pg_control_system()) and the database's name. A replica
// region's client sends the identity of its local replica with every unit
// (Unit.system_identifier and Unit.database), and the executor refuses a
// unit whose identity is not that of the database it serves
// (RefusalDatabase): the write would succeed on the primary and never show
// up on the replica.
type Identity struct {
	SystemIdentifier uint64
	Database         string
}

func (id Identity) String() string {
	return fmt.Sprintf("database %q of cluster %d", id.Database, id.SystemIdentifier)
}

// IdentityColumns read a connection's Identity: the system identifier
// (scan it into an int64) and the database name.
const IdentityColumns = `(SELECT system_identifier FROM pg_control_system()), current_database()`

// IdentitySQL reads a connection's Identity.
const IdentitySQL = `SELECT ` + IdentityColumns
