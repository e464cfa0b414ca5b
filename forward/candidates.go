package forward

import (
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/health" // the client side of gRPC health checking (healthCheckConfig)
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/protocol"
)

// A client may know several executors, of which one serves: the one whose
// database is the writable primary (an executor reports NOT_SERVING while
// its database is in recovery). Target then names them all — a
// comma-separated list of addresses, or a DNS name that resolves to
// instances in several regions, such as Fly's global.<app>.internal — and,
// with ClientConfig.HealthChecked, gRPC's health-checked load balancing
// sends units only to executors reporting SERVING. When the primary moves
// (a failover promotes a replica elsewhere), the executor there turns
// SERVING and units go to it, with no restart.
//
// Exactly-once holds across the switch: a retry names the executor
// instance its first attempt went to, learned per connection (see
// instance.go), and an executor that is not that instance and does not
// know the unit refuses to run it and answers "in doubt".

// candidatesScheme is the resolver scheme of a Target that lists several
// addresses; each client registers its own resolver for it (no global
// registration).
const candidatesScheme = "flypg-candidates"

// targetOptions returns the gRPC target and dial options for cfg's Target
// and HealthChecked: a resolver of the client's own for a list of
// addresses, and the service config that turns on round-robin balancing
// over executors reporting SERVING.
func targetOptions(cfg *ClientConfig) (string, []grpc.DialOption, error) {
	target := cfg.Target
	var opts []grpc.DialOption
	if strings.Contains(target, ",") {
		var addrs []resolver.Address
		for _, a := range strings.Split(target, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, resolver.Address{Addr: a})
			}
		}
		if len(addrs) == 0 {
			return "", nil, fmt.Errorf("no address in target %q", target)
		}
		r := manual.NewBuilderWithScheme(candidatesScheme)
		r.InitialState(resolver.State{Addresses: addrs})
		opts = append(opts, grpc.WithResolvers(r))
		target = candidatesScheme + ":///executors"
	}
	if cfg.HealthChecked {
		opts = append(opts, grpc.WithDefaultServiceConfig(fmt.Sprintf(
			`{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":%q}}`,
			forwardpb.Executor_ServiceDesc.ServiceName)))
	}
	return target, opts, nil
}

// dropIfNotServing ends session s, with HealthChecked, when its executor
// answered that it ran nothing because it does not serve now (its
// database is unreachable or not the primary): the balancer sends new
// streams only to serving executors, but a session is one long-lived
// stream and would keep going to this one. Statements still pending on it
// are asked again, with their request IDs, on a new session.
func (s *session) dropIfNotServing(code codes.Code, outcome string) {
	if s.c.cfg.HealthChecked && outcome == protocol.OutcomeNotRun && (code == codes.Unavailable || code == codes.FailedPrecondition) {
		s.fail(status.Error(codes.Unavailable, "forward: the executor does not serve now; its session is closed"))
	}
}
