package fsm

import (
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/shard"
)

// The bbolt schema, inside the group's root bucket (storage.State). All the
// keys of one timeline live in bucketTimelines under timelineKey(id): its
// slot (2 bytes, big-endian), a 2-byte big-endian length and the id, so
// they form one contiguous range no other id's keys fall into, and a slot
// range is one key range (to be exported and imported whole when slots
// move between groups). Within it a kind byte
// orders the counter first, then the entries by seq, then the dedupe
// records, so an append usually dirties a single leaf page.
var (
	// bucketMeta holds the applied index and term, written in the same
	// transaction as the data they describe.
	bucketMeta = []byte("meta")
	// bucketTimelines: timelineKey + kindCounter -> seqgen counter;
	// timelineKey + kindEntry + seq (8, big-endian) -> StoredEntry;
	// timelineKey + kindDedupe + idempotency key -> DedupeRecord;
	// timelineKey + kindInfo -> TimelineInfo (class, trim floor);
	// timelineKey + kindDelivered + conversation id -> the last message
	// delivered into this timeline from the conversation: its conversation
	// seq and delivery seq (8 + 8, big-endian; 8 bytes before schema 3),
	// then, from schema 6, the user's read state of it (read seq, others,
	// others read: 8 + 8 + 8);
	// timelineKey(conversation) + kindQueued + member id -> how many of the
	// conversation's messages were queued for that member (8, big-endian).
	bucketTimelines = []byte("timelines")
	// bucketOutbox: timelineKey(conversation) + seq (8, big-endian) ->
	// OutboxJob, so jobs list by conversation, then in conversation order.
	bucketOutbox = []byte("outbox")
	// bucketDedupeExpiry: ts_ms (8, big-endian) + dedupe key -> nothing; the
	// order in which dedupe records expire. The one index not keyed by slot:
	// it is derived from the dedupe records (which are), and rebuilt from
	// them for slots that move.
	bucketDedupeExpiry = []byte("dedupe_expiry")
	// bucketNodes: node id -> NodeRecord.
	bucketNodes = []byte("nodes")
	// bucketShardMap: keyShardMap -> ShardMap (meta group).
	bucketShardMap = []byte("shard_map")
	// bucketRanges: keyRanges -> SetRanges (data groups): the slots owned.
	bucketRanges = []byte("ranges")
	// bucketCollections holds the versioned record collections, each one
	// contiguous range under collectionKey(id) (slot first, like a
	// timeline): collKind* below.
	bucketCollections = []byte("collections")
	// bucketCollectionExpiry: ts_ms (8) + a collection dedupe key ->
	// nothing; bucketDedupeExpiry's twin for collection writes.
	bucketCollectionExpiry = []byte("collection_dedupe_expiry")
	// bucketRecordOutbox: collectionKey(source) + version (8) -> CopyJob,
	// the copies a write still has to make, in version order per source.
	bucketRecordOutbox = []byte("record_outbox")
	// bucketDevices holds each user's sessions, device cursors and read
	// state under timelineKey(user) (devKind* in devices.go), on the
	// user's slot like its timeline.
	bucketDevices = []byte("devices")
	// bucketMoves holds slot moves: a source's move log positions, a
	// target's import states and the meta group's move records
	// (movesLogPrefix, movesInPrefix, movesRecPrefix in move_source.go).
	bucketMoves = []byte("moves")
	// bucketMoveLog: move id (8) + position (8) -> bucket index (1) + key:
	// the keys a source group changed in a tracked range (move_source.go).
	bucketMoveLog = []byte("move_log")

	keyAppliedIndex = []byte("applied_index")
	keyAppliedTerm  = []byte("applied_term")
	keySchema       = []byte("schema_version")
)

// Kinds of key within a timeline's range.
const (
	kindCounter   byte = 0
	kindEntry     byte = 1
	kindDedupe    byte = 2
	kindInfo      byte = 3
	kindDelivered byte = 4
	kindQueued    byte = 5
	// kindUnread + uint16 len(conversation) + conversation + seq (8) -> how
	// many messages of other senders the timeline's user had received from
	// the conversation up to and including that one: the unread index
	// (unread.go).
	kindUnread byte = 6
	// A timeline's end is found by seeking to kind 0xff (timelineEnd).
)

// schemaVersion is stored in bucketMeta; a replica refuses any other.
// Version 2 added the outbox bucket and the info and delivered kinds;
// version 3 delivery seqs (the queued kind and 16-byte delivered marks);
// version 4, the first kept in the node-wide storage engine, keys
// timelines by slot first; version 5 adds the collection buckets (a
// version-4 state is upgraded in place at open: it only gains the empty
// buckets); version 6 adds the devices bucket (sessions, cursors, read
// state; versions 4 and 5 are upgraded the same way). States of versions 1
// to 3 lived in a file per group (data dir layout 1), which this binary
// refuses at start. Version 7 adds the slot-move buckets (moves,
// move_log), upgraded in place the same way.
const schemaVersion = 7

// upgradableSchemas are the older versions createSchema upgrades in place:
// they differ from this one only by buckets it creates empty.
var upgradableSchemas = []uint64{4, 5, 6}

// dataBuckets are the buckets whose content must be identical on every
// replica that applied the same log prefix (see Digest).
var dataBuckets = [][]byte{bucketTimelines, bucketDedupeExpiry, bucketNodes, bucketShardMap, bucketRanges, bucketOutbox, bucketCollections, bucketCollectionExpiry, bucketRecordOutbox, bucketDevices, bucketMoves, bucketMoveLog}

func createSchema(root *bolt.Bucket) error {
	for _, name := range append([][]byte{bucketMeta}, dataBuckets...) {
		if _, err := root.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := root.Bucket(bucketMeta)
	if v := meta.Get(keySchema); v != nil {
		switch got := binary.BigEndian.Uint64(v); {
		case got == schemaVersion:
			return nil
		case slices.Contains(upgradableSchemas, got): // the buckets were created above
		default:
			return fmt.Errorf("state has schema version %d; this binary reads version %d", got, schemaVersion)
		}
	}
	return meta.Put(keySchema, u64(schemaVersion))
}

func timelineKey(id string) []byte {
	k := make([]byte, 4, 4+len(id)+9)
	binary.BigEndian.PutUint16(k, uint16(shard.SlotOf(id)))
	binary.BigEndian.PutUint16(k[2:], uint16(len(id)))
	return append(k, id...)
}

// timelineIDOf is the id a timeline key starts with, or false when k is
// too short to hold one.
func timelineIDOf(k []byte) (string, bool) {
	if len(k) < 4 || len(k) < 4+int(binary.BigEndian.Uint16(k[2:])) {
		return "", false
	}
	return string(k[4 : 4+int(binary.BigEndian.Uint16(k[2:]))]), true
}

// kindKey is a timeline's key of one kind, followed by suffix.
func kindKey(tlKey []byte, kind byte, suffix []byte) []byte {
	k := make([]byte, 0, len(tlKey)+1+len(suffix))
	k = append(append(k, tlKey...), kind)
	return append(k, suffix...)
}

func counterKey(tlKey []byte) []byte { return kindKey(tlKey, kindCounter, nil) }

func entryKey(tlKey []byte, seq uint64) []byte {
	return kindKey(tlKey, kindEntry, binary.BigEndian.AppendUint64(nil, seq))
}

// entryPrefix is what every entry key of a timeline starts with.
func entryPrefix(tlKey []byte) []byte { return kindKey(tlKey, kindEntry, nil) }

func dedupeKey(tlKey []byte, idempotencyKey string) []byte {
	return kindKey(tlKey, kindDedupe, []byte(idempotencyKey))
}

func infoKey(tlKey []byte) []byte { return kindKey(tlKey, kindInfo, nil) }

func queuedKey(convKey []byte, member string) []byte {
	return kindKey(convKey, kindQueued, []byte(member))
}

func deliveredKey(tlKey []byte, conversation string) []byte {
	return kindKey(tlKey, kindDelivered, []byte(conversation))
}

// timelineEnd is past every key of the timeline (kinds are below 0xff).
func timelineEnd(tlKey []byte) []byte { return kindKey(tlKey, 0xff, nil) }

func outboxKey(conversation string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(timelineKey(conversation), seq)
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
