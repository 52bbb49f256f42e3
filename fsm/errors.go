package fsm

import "errors"

// Sentinel errors. Callers branch with errors.Is; messages wrapped around them
// say what exactly was wrong.
var (
	// ErrInvalidArgument marks a command or read whose fields break a limit or
	// an invariant. Nothing was changed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrMalformedCommand marks a log entry that does not decode as a command.
	// The entry is consumed (its index is applied) but changes nothing.
	ErrMalformedCommand = errors.New("fsm: malformed command")
	// ErrClosed is returned by reads on a closed FSM.
	ErrClosed = errors.New("fsm: closed")
)
