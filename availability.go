package flypg

import (
	"github.com/flypg/flypg/callbacks"
)

// availability configures what the router does when the local replica
// stops, lags or refuses (Config's DisableReplicaFallback,
// DisableSafetyNet, ProbeInterval, MaxReplicaLag, MaxReplicaLagBytes), and
// tells ReadModeTracers when reads move.
func (p *Plugin) availability(r *callbacks.Router) error {
	cfg := p.cfg
	r.Fallback = !cfg.DisableReplicaFallback
	r.SafetyNet = !cfg.DisableSafetyNet
	r.ProbeInterval = cfg.ProbeInterval
	r.MaxLag = cfg.MaxReplicaLag // negative: off
	r.MaxLagBytes = cfg.MaxReplicaLagBytes
	r.FollowPromotion = !cfg.DisableFollowPromotion
	if modes := p.tracers.modes; len(modes) > 0 {
		r.OnMode = func(m callbacks.Mode) {
			for _, x := range modes {
				x.TraceReadMode(m)
			}
		}
	}
	return nil
}

// ReadMode says where reads that would run on the local replica run now,
// and why: on the primary while the local replica is unreachable. Always
// local in the primary region.
func (p *Plugin) ReadMode() callbacks.Mode {
	p.mu.Lock()
	r := p.router
	p.mu.Unlock()
	if r == nil {
		return callbacks.Mode{}
	}
	return r.Mode()
}

// WritesLocally reports whether this replica-region node saw its local
// database promoted and runs writes on it (Config.DisableFollowPromotion).
func (p *Plugin) WritesLocally() bool {
	p.mu.Lock()
	r := p.router
	p.mu.Unlock()
	return r != nil && r.WritesLocally()
}
