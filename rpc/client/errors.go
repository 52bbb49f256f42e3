package client

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors, one per gRPC code. Every error a Client method returns
// for an answer of the cluster (or a refusal of its own, such as a bad
// address) matches the sentinel of its code with errors.Is, so callers can
// branch without decoding statuses:
//
//	if errors.Is(err, client.ErrFailedPrecondition) { ... }
//
// status.Code(err) and status.FromError(err) keep working on the same
// errors (see Error).
var (
	ErrCanceled           = errors.New("client: canceled")
	ErrInvalidArgument    = errors.New("client: invalid argument")
	ErrDeadlineExceeded   = errors.New("client: deadline exceeded")
	ErrNotFound           = errors.New("client: not found")
	ErrAlreadyExists      = errors.New("client: already exists")
	ErrPermissionDenied   = errors.New("client: permission denied")
	ErrResourceExhausted  = errors.New("client: resource exhausted")
	ErrFailedPrecondition = errors.New("client: failed precondition")
	ErrAborted            = errors.New("client: aborted")
	ErrOutOfRange         = errors.New("client: out of range")
	ErrUnimplemented      = errors.New("client: unimplemented")
	ErrInternal           = errors.New("client: internal error")
	ErrUnavailable        = errors.New("client: unavailable")
	ErrDataLoss           = errors.New("client: data loss")
	ErrUnauthenticated    = errors.New("client: unauthenticated")

	// ErrUnreachable is matched (besides ErrUnavailable) by an error about
	// nodes the client could not connect to at all: the connection was
	// refused, the name did not resolve or the TLS handshake failed. No
	// server saw the request.
	ErrUnreachable = errors.New("client: unreachable")
)

// sentinels is the one table from codes to sentinel errors. OK and Unknown
// have none: Unknown is what a callback's own error (not a gRPC answer)
// would read as.
var sentinels = map[codes.Code]error{
	codes.Canceled:           ErrCanceled,
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.DeadlineExceeded:   ErrDeadlineExceeded,
	codes.NotFound:           ErrNotFound,
	codes.AlreadyExists:      ErrAlreadyExists,
	codes.PermissionDenied:   ErrPermissionDenied,
	codes.ResourceExhausted:  ErrResourceExhausted,
	codes.FailedPrecondition: ErrFailedPrecondition,
	codes.Aborted:            ErrAborted,
	codes.OutOfRange:         ErrOutOfRange,
	codes.Unimplemented:      ErrUnimplemented,
	codes.Internal:           ErrInternal,
	codes.Unavailable:        ErrUnavailable,
	codes.DataLoss:           ErrDataLoss,
	codes.Unauthenticated:    ErrUnauthenticated,
}

// Error is how the client returns a gRPC status: errors.Is matches the
// sentinel of its code (and ErrUnreachable when no node could be
// connected), GRPCStatus serves status.FromError and status.Code, and
// Unwrap gives the error as it came. Use errors.As to get at the status
// details (a NotLeader, a ConditionFailed).
type Error struct {
	st          *status.Status
	err         error
	unreachable bool
}

func (e *Error) Error() string { return e.err.Error() }

// Unwrap returns the error as the gRPC call returned it (or the client's
// own description).
func (e *Error) Unwrap() error { return e.err }

// GRPCStatus is the status the error carries.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// Code is the status code.
func (e *Error) Code() codes.Code { return e.st.Code() }

// Is matches the sentinel of the error's code, and ErrUnreachable.
func (e *Error) Is(target error) bool {
	if target == ErrUnreachable {
		return e.unreachable
	}
	s, ok := sentinels[e.st.Code()]
	return ok && s == target
}

// typed makes a gRPC status error an *Error. Errors that already hold one,
// and errors that are no status (a callback's own, a context's), are
// returned as they are.
func typed(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{st: st, err: err}
}

// newError is an error of the client's own with a code; a cause (may be
// nil) comes first in the message and is wrapped for errors.Is.
func newError(code codes.Code, cause error, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	err := errors.New(msg)
	if cause != nil {
		err = fmt.Errorf("%w: %s", cause, msg)
	}
	return &Error{st: status.New(code, err.Error()), err: err}
}
