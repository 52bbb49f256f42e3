package fsm

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/seqgen"
)

// The bbolt schema. Every key that names a timeline starts with
// timelineKey(id): a 2-byte big-endian length and the id, so one timeline's
// keys form a contiguous range that no other id's keys fall into.
var (
	// bucketMeta holds the applied index and term, written in the same
	// transaction as the data they describe.
	bucketMeta = []byte("meta")
	// bucketEntries: timelineKey + seq (8, big-endian) -> StoredEntry.
	bucketEntries = []byte("entries")
	// bucketDedupe: timelineKey + idempotency key -> DedupeRecord.
	bucketDedupe = []byte("dedupe")
	// bucketDedupeExpiry: ts_ms (8, big-endian) + dedupe key -> nothing; the
	// order in which dedupe records expire.
	bucketDedupeExpiry = []byte("dedupe_expiry")
	// bucketNodes: node id -> NodeRecord.
	bucketNodes = []byte("nodes")
	// bucketShardMap: keyShardMap -> ShardMap (meta group).
	bucketShardMap = []byte("shard_map")
	// bucketRanges: keyRanges -> SetRanges (data groups): the slots owned.
	bucketRanges = []byte("ranges")

	keyAppliedIndex = []byte("applied_index")
	keyAppliedTerm  = []byte("applied_term")
	keySchema       = []byte("schema_version")
)

// schemaVersion is stored in bucketMeta; a replica refuses a newer schema.
const schemaVersion = 1

// dataBuckets are the buckets whose content must be identical on every
// replica that applied the same log prefix (see Digest).
var dataBuckets = [][]byte{seqgen.BucketName, bucketEntries, bucketDedupe, bucketDedupeExpiry, bucketNodes, bucketShardMap, bucketRanges}

func createSchema(tx *bolt.Tx) error {
	for _, name := range append([][]byte{bucketMeta}, dataBuckets...) {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if err := seqgen.CreateBucket(tx); err != nil {
		return err
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keySchema); v != nil {
		if got := binary.BigEndian.Uint64(v); got > schemaVersion {
			return fmt.Errorf("state has schema version %d; this binary knows up to %d", got, schemaVersion)
		}
		return nil
	}
	return meta.Put(keySchema, u64(schemaVersion))
}

func timelineKey(id string) []byte {
	k := make([]byte, 2, 2+len(id)+8)
	binary.BigEndian.PutUint16(k, uint16(len(id)))
	return append(k, id...)
}

func entryKey(tlKey []byte, seq uint64) []byte {
	k := make([]byte, len(tlKey), len(tlKey)+8)
	copy(k, tlKey)
	return binary.BigEndian.AppendUint64(k, seq)
}

func dedupeKey(tlKey []byte, idempotencyKey string) []byte {
	k := make([]byte, len(tlKey), len(tlKey)+len(idempotencyKey))
	copy(k, tlKey)
	return append(k, idempotencyKey...)
}

func expiryKey(tsMs int64, dk []byte) []byte {
	k := make([]byte, 8, 8+len(dk))
	binary.BigEndian.PutUint64(k, uint64(tsMs))
	return append(k, dk...)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}
