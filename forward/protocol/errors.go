package protocol

import "errors"

// Errors both ends speak: a client reports them to its callers, and the
// functions an executor runs for Call (its call handler) return them to
// say what happened.
var (
	// ErrInDoubt: the unit may or may not have committed. A client
	// reports it when a reply was lost and the executor could not tell
	// within the deadline; a call handler returns it when its COMMIT's
	// outcome is unknown, and the executor then answers the unit as in
	// doubt instead of as failed.
	ErrInDoubt = errors.New("outcome in doubt: the write may have committed")

	// ErrUnknownFunction: Call named a function the executor has not
	// registered. A call handler returns it for a name it does not know.
	ErrUnknownFunction = errors.New("unknown function")
)

// CallError is a registered function's failure, reported by the executor.
// The function's transaction did not commit. Err, when set, is the
// PostgreSQL error that made it fail. A function may return a *CallError
// itself to choose the Code its caller sees.
type CallError struct {
	Name    string // the function
	Code    string // chosen by the function, or ""
	Message string
	Err     error // *pgconn.PgError, or nil
}

func (e *CallError) Error() string {
	s := "forward: call " + e.Name + ": "
	if e.Code != "" {
		s += e.Code + ": "
	}
	return s + e.Message
}

// Unwrap returns the PostgreSQL error, if any.
func (e *CallError) Unwrap() error { return e.Err }
