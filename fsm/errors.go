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
	// ErrNodeConflict marks a node registration that clashes with a
	// registered node: its id at another Raft address, or another id at its
	// Raft address. Nothing was changed.
	ErrNodeConflict = errors.New("fsm: node conflicts with a registered node")
	// ErrDeliveryGap marks a delivery item more than one past the timeline's
	// mark for its conversation: an earlier message is missing (or the item
	// is forged). The whole Deliver was refused; nothing was changed.
	ErrDeliveryGap = errors.New("fsm: delivery out of order")
	// ErrNeedsUpgrade marks a log entry of a command format or kind this
	// binary does not know, proposed by a newer binary. Applying it is
	// impossible and skipping it would diverge: the replica must stop.
	ErrNeedsUpgrade = errors.New("fsm: command needs a newer binary")
	// ErrClosed is returned by reads on a closed FSM.
	ErrClosed = errors.New("fsm: closed")
	// ErrFenced: this replica found its state damaged and applies nothing
	// more; it serves nothing until it is rebuilt from a healthy replica.
	ErrFenced = errors.New("fsm: replica fenced: its state is damaged and is being rebuilt")
)
