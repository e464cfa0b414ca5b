package pgtest

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Reconfigure changes settings of a running node with ALTER SYSTEM (kept
// across restarts) and reloads its configuration, for settings PostgreSQL
// applies on reload: recovery_min_apply_delay on a replica makes it lag
// the primary by that much (a real way to stall replay without a proxy),
// "0" lets it catch up. A value "" resets the setting to its default.
func (n *Node) Reconfigure(ctx context.Context, settings map[string]string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	conn, err := n.connect(ctx)
	if err != nil {
		return fmt.Errorf("pgtest: %s: reconfigure: %w", n.name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		stmt := "ALTER SYSTEM SET " + pgx.Identifier{k}.Sanitize() + " = " + quoteSetting(settings[k])
		if settings[k] == "" {
			stmt = "ALTER SYSTEM RESET " + pgx.Identifier{k}.Sanitize()
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("pgtest: %s: %s: %w", n.name, stmt, err)
		}
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pgtest: %s: reload: %w", n.name, err)
	}
	return nil
}
