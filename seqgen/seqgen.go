// Package seqgen allocates per-timeline sequence numbers inside the state
// machine's bbolt write transaction.
//
// A seq is allocated when a committed Raft entry is applied (seq = head + 1),
// in the same transaction that stores the entry. So only a committed entry
// consumes a seq, a rolled-back transaction consumes none, and every replica
// allocates the same seq for the same log entry: no seq is skipped or reused
// across leader changes, crashes or restarts.
package seqgen

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// BucketName is the bbolt bucket that holds one counter per timeline.
var BucketName = []byte("seq")

// ErrNoBucket means CreateBucket was never called on this database.
var ErrNoBucket = errors.New("seqgen: counter bucket missing")

// counterLen is the encoded size of a Counter: head (8) + last timestamp (8).
const counterLen = 16

// Counter is the allocation state of one timeline.
type Counter struct {
	// Head is the last seq allocated; 0 for a timeline that has none.
	Head uint64
	// LastTsMs is the timestamp given with Head, in Unix milliseconds.
	LastTsMs int64
}

// CreateBucket makes the counter bucket if it does not exist yet.
func CreateBucket(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(BucketName); err != nil {
		return fmt.Errorf("seqgen: create bucket: %w", err)
	}
	return nil
}

// Counters reads and advances counters within one bbolt transaction.
type Counters struct {
	b *bolt.Bucket
}

// In returns the counters of tx. A read-only tx can call Get only.
func In(tx *bolt.Tx) (*Counters, error) {
	b := tx.Bucket(BucketName)
	if b == nil {
		return nil, ErrNoBucket
	}
	return &Counters{b: b}, nil
}

// Get returns the counter of a timeline (zero if it has none).
func (c *Counters) Get(timeline []byte) (Counter, error) {
	v := c.b.Get(timeline)
	if v == nil {
		return Counter{}, nil
	}
	if len(v) != counterLen {
		return Counter{}, fmt.Errorf("seqgen: counter of %q is %d bytes, want %d", timeline, len(v), counterLen)
	}
	return Counter{
		Head:     binary.BigEndian.Uint64(v[:8]),
		LastTsMs: int64(binary.BigEndian.Uint64(v[8:])),
	}, nil
}

// Next allocates the next seq of a timeline and its timestamp. The timestamp
// is nowMs, raised to the previous entry's timestamp when a clock went back
// (a new leader whose clock is behind), so timestamps never decrease along a
// timeline.
func (c *Counters) Next(timeline []byte, nowMs int64) (seq uint64, tsMs int64, err error) {
	cur, err := c.Get(timeline)
	if err != nil {
		return 0, 0, err
	}
	next := Counter{Head: cur.Head + 1, LastTsMs: max(nowMs, cur.LastTsMs)}
	var buf [counterLen]byte
	binary.BigEndian.PutUint64(buf[:8], next.Head)
	binary.BigEndian.PutUint64(buf[8:], uint64(next.LastTsMs))
	if err := c.b.Put(timeline, buf[:]); err != nil {
		return 0, 0, fmt.Errorf("seqgen: store counter of %q: %w", timeline, err)
	}
	return next.Head, next.LastTsMs, nil
}
