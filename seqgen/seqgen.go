// Package seqgen allocates per-timeline sequence numbers inside the state
// machine's bbolt write transaction.
//
// A seq is allocated when a committed Raft entry is applied (seq = head + 1),
// in the same transaction that stores the entry. So only a committed entry
// consumes a seq, a rolled-back transaction consumes none, and every replica
// allocates the same seq for the same log entry: no seq is skipped or reused
// across leader changes, crashes or restarts. Where the counter is stored
// (bucket and key) is the caller's choice: the state machine keeps it next to
// the timeline's entries, so an append dirties one page, not two.
package seqgen

import (
	"encoding/binary"
	"fmt"
)

// Store is where counters live: a key-value view of the caller's write
// transaction (the state machine's adds a checksum to every value). Get
// returns nil for a missing key.
type Store interface {
	Get(key []byte) ([]byte, error)
	Put(key, value []byte) error
}

// counterLen is the encoded size of a Counter: head (8) + last timestamp (8).
const counterLen = 16

// Counter is the allocation state of one timeline.
type Counter struct {
	// Head is the last seq allocated; 0 for a timeline that has none.
	Head uint64
	// LastTsMs is the timestamp given with Head, in Unix milliseconds.
	LastTsMs int64
}

// Get reads the counter stored at key in b (zero if there is none).
func Get(b Store, key []byte) (Counter, error) {
	v, err := b.Get(key)
	if err != nil {
		return Counter{}, fmt.Errorf("seqgen: counter at %q: %w", key, err)
	}
	if v == nil {
		return Counter{}, nil
	}
	if len(v) != counterLen {
		return Counter{}, fmt.Errorf("seqgen: counter at %q is %d bytes, want %d", key, len(v), counterLen)
	}
	return Counter{
		Head:     binary.BigEndian.Uint64(v[:8]),
		LastTsMs: int64(binary.BigEndian.Uint64(v[8:])),
	}, nil
}

// Next allocates the next seq of the counter at key and its timestamp. The
// timestamp is nowMs, raised to the previous entry's timestamp when a clock
// went back (a new leader whose clock is behind), so timestamps never
// decrease along a timeline.
func Next(b Store, key []byte, nowMs int64) (seq uint64, tsMs int64, err error) {
	cur, err := Get(b, key)
	if err != nil {
		return 0, 0, err
	}
	next := Counter{Head: cur.Head + 1, LastTsMs: max(nowMs, cur.LastTsMs)}
	if err := Set(b, key, next); err != nil {
		return 0, 0, err
	}
	return next.Head, next.LastTsMs, nil
}

// Set stores c at key. Only Next moves a counter in normal operation; Set
// is for a restore that raises one (fsm.RaiseHeads).
func Set(b Store, key []byte, c Counter) error {
	var buf [counterLen]byte
	binary.BigEndian.PutUint64(buf[:8], c.Head)
	binary.BigEndian.PutUint64(buf[8:], uint64(c.LastTsMs))
	if err := b.Put(key, buf[:]); err != nil {
		return fmt.Errorf("seqgen: store counter at %q: %w", key, err)
	}
	return nil
}
