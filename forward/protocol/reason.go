package protocol

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the domain of the ErrorInfo details (google.rpc.ErrorInfo) by
// which the executor types a refusal that comes before any unit exists:
// the refusal of a call by its authentication, which runs before the
// executor's service and can set no trailer. A unit's own conditions
// travel in its Trailer.
const Domain = "flypg.forward"

// Reasons of the ErrorInfo details of Domain.
const (
	// ReasonBusy: the executor has no room to admit the call now (its
	// memory of recently used authentication nonces is full). Nothing ran;
	// retry later.
	ReasonBusy = "BUSY"
)

// Refusal returns a status error of code and msg whose ErrorInfo detail
// carries reason.
func Refusal(code codes.Code, reason, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// Reason returns the reason of err's ErrorInfo detail of Domain, or "".
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}
