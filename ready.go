package flypg

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotReady matches the error of Plugin.Ready.
var ErrNotReady = errors.New("flypg: not ready")

// NotReadyError is one failed check of Plugin.Ready: Check names it
// ("local database", "role", "executor"), Err says why.
type NotReadyError struct {
	Check string
	Err   error
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("flypg: not ready: %s: %v", e.Check, e.Err)
}
func (e *NotReadyError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotReady) true.
func (e *NotReadyError) Is(target error) bool { return target == ErrNotReady }

// DefaultReadyTimeout bounds Ready when ctx has no deadline.
const DefaultReadyTimeout = 2 * time.Second

// Ready reports whether this node can serve, for readiness endpoints
// (/readyz) and deploy checks: the local database answers and has the
// role this region expects (the primary in the primary region, a replica
// elsewhere, unless it was promoted and writes run on it), and, in a
// replica region, the executor answers and reports SERVING (its database
// is a writable primary). It returns nil, or the
// failed checks as *NotReadyError values joined (errors.Is(err,
// ErrNotReady)). Without a deadline in ctx it takes at most
// DefaultReadyTimeout.
//
// Ready is stricter than what the node can still do: with the local
// replica down, reads run on the primary (Config.DisableReplicaFallback),
// yet Ready fails, so that a deploy does not proceed and a load balancer
// prefers other nodes.
func (p *Plugin) Ready(ctx context.Context) error {
	p.mu.Lock()
	local, client, router, primary, closed, installed := p.local, p.client, p.router, p.primary, p.closed, p.db != nil
	p.mu.Unlock()
	switch {
	case closed:
		return &NotReadyError{Check: "plugin", Err: errors.New("closed")}
	case !installed:
		return &NotReadyError{Check: "plugin", Err: errors.New("not installed (db.Use)")}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultReadyTimeout)
		defer cancel()
	}
	var errs []error
	var inRecovery bool
	if err := local.QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		errs = append(errs, &NotReadyError{Check: "local database", Err: err})
	} else if !inRecovery && router != nil && router.FollowPromotion {
		router.LocalPromoted() // a replica region whose database was promoted: writes run on it
	} else if inRecovery == primary {
		want := "a replica (in recovery)"
		if primary {
			want = "the primary (not in recovery)"
		}
		errs = append(errs, &NotReadyError{Check: "role", Err: fmt.Errorf("the local database of region %q is not %s", p.cfg.Region, want)})
	}
	if client != nil && !router.WritesLocally() {
		if err := client.Ping(ctx); err != nil {
			errs = append(errs, &NotReadyError{Check: "executor", Err: err})
		}
	}
	return errors.Join(errs...)
}
