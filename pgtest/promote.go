package pgtest

import (
	"context"
	"fmt"
)

// Failover moves the primary to replica i, as an orchestrator does after
// losing the primary: it stops the primary (a fast shutdown, so that its
// last WAL reaches the connected replicas first), promotes replica i (which
// starts a new timeline), points every other running replica at it, and
// waits until they have replayed its current position on the new timeline
// (recovery_target_timeline is 'latest', PostgreSQL's default, so a
// replica follows the switch by itself once pointed at the new primary).
//
// Afterwards Cluster.Primary is replica i, which also stays in Replicas at
// the same index; the old primary stays stopped (Close still removes it).
// Re-pointed replicas connect to the new primary directly, not through
// their Link.
func (c *Cluster) Failover(ctx context.Context, i int) error {
	if i < 0 || i >= len(c.Replicas) {
		return fmt.Errorf("pgtest: failover: no replica %d", i)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	old, next := c.Primary, c.Replicas[i]
	if err := old.Stop(ctx); err != nil {
		return fmt.Errorf("pgtest: failover: stop %s: %w", old.name, err)
	}
	if err := next.Promote(ctx); err != nil {
		return fmt.Errorf("pgtest: failover: %w", err)
	}
	c.Primary = next
	c.retired = append(c.retired, old)
	for _, r := range c.Replicas {
		if r == next || !r.running() {
			continue
		}
		if err := r.Follow(ctx, next); err != nil {
			return fmt.Errorf("pgtest: failover: %w", err)
		}
	}
	return c.WaitReplicated(ctx)
}

// Follow points the replica n at primary p (primary_conninfo, applied on
// reload): its WAL receiver reconnects there and, after a promotion,
// follows p's timeline.
func (n *Node) Follow(ctx context.Context, p *Node) error {
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", p.Port(), n.name)
	return n.Reconfigure(ctx, map[string]string{"primary_conninfo": conninfo})
}
