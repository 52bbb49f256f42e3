package fsm

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// prevKey moves c back from cur, the key it is at, and returns the key
// before it (nil if there is none).
//
// bbolt's Cursor.Prev may return nil with keys still before it: in a write
// transaction whose deletes emptied a leaf (bbolt rebalances at commit),
// Prev steps onto the empty leaf and stops there; its Next, Seek, First
// and Last skip such leaves. An apply that walks back (a MarkRead finding
// the unread index key below its seq) then misses keys, and since how
// many deletes share a transaction depends on how applies were batched
// (live, or replayed after a restart), replicas diverged: jepsen-lite
// found a replica rebuilt from its log with a different read count. Reads
// see committed trees, which hold no empty leaves.
//
// Another Prev from an empty leaf moves on to the leaf before it, so prevKey
// calls Prev again until it gets a key or no key before cur is left.
func prevKey(c *bolt.Cursor, cur []byte) (k, v []byte) {
	for {
		if k, v = c.Prev(); k != nil {
			return k, v
		}
		if first, _ := c.Bucket().Cursor().First(); first == nil || bytes.Compare(first, cur) >= 0 {
			return nil, nil
		}
	}
}
