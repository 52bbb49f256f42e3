package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// A collection's keys in bucketCollections, after collectionKey(id): a kind
// byte, then the kind's suffix.
const (
	// collKindInfo -> CollectionInfo (version, horizon, counts, digest).
	collKindInfo byte = 0
	// collKindRecord + record key -> StoredRecord (value or tombstone).
	collKindRecord byte = 1
	// collKindByVersion + version (8) + record key -> nothing: each record's
	// current version, so Sync reads the changes after a version in order.
	// A record has exactly one such key; a rewrite moves it.
	collKindByVersion byte = 2
	// collKindDedupe + idempotency key -> WriteDedupe.
	collKindDedupe byte = 3
	// collKindCopyMark + uint16 length + source collection + key -> the
	// newest source version copied into this collection's key from there.
	collKindCopyMark byte = 4
)

// collectionKey is where a collection's keys start: slot first, then the
// length-prefixed id (the layout of timelineKey, in its own bucket).
func collectionKey(id string) []byte { return timelineKey(id) }

func collInfoKey(ck []byte) []byte { return kindKey(ck, collKindInfo, nil) }

func recordKey(ck []byte, key string) []byte { return kindKey(ck, collKindRecord, []byte(key)) }

func recordPrefix(ck []byte) []byte { return kindKey(ck, collKindRecord, nil) }

func byVersionKey(ck []byte, version uint64, key string) []byte {
	return kindKey(ck, collKindByVersion, append(binary.BigEndian.AppendUint64(nil, version), key...))
}

func byVersionPrefix(ck []byte) []byte { return kindKey(ck, collKindByVersion, nil) }

func collDedupeKey(ck []byte, idem string) []byte { return kindKey(ck, collKindDedupe, []byte(idem)) }

// WriteResult is the outcome of a RecordWrite.
type WriteResult struct {
	Version uint64
	// Deduplicated: the idempotency key was applied before; Version is the
	// original one and nothing was written.
	Deduplicated bool
}

// RecordVersion is a record's current version (0: absent or deleted).
type RecordVersion struct {
	Key     string
	Version uint64
}

// ConditionFailedError is a RecordWrite refused because a condition did not
// hold. It carries the current versions so the caller can decide what to
// do; errors.Is(err, ErrConditionFailed) holds.
type ConditionFailedError struct {
	Collection string
	// Version is the collection's version.
	Version uint64
	// Records holds the current version of every record a condition named.
	Records []RecordVersion
	Reason  string
}

func (e *ConditionFailedError) Error() string {
	return fmt.Sprintf("%v: collection %q is at version %d: %s", ErrConditionFailed, truncate(e.Collection), e.Version, e.Reason)
}

func (e *ConditionFailedError) Unwrap() error { return ErrConditionFailed }

func applyRecordWrite(root *bolt.Bucket, ch *Changes, nowMs int64, w *fsmpb.RecordWrite) (*WriteResult, error) {
	if err := ValidateRecordWrite(w); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(root, w.GetCollection()); err != nil {
		return nil, err
	}
	cb := sealed{root.Bucket(bucketCollections)}
	if err := gcDedupeIn(root, bucketCollectionExpiry, bucketCollections, nowMs-w.GetDedupeWindowMs(), writeDedupeTs); err != nil {
		return nil, err
	}
	ck := collectionKey(w.GetCollection())
	var dk []byte
	if idem := w.GetIdempotencyKey(); idem != "" {
		dk = collDedupeKey(ck, idem)
		rec, err := readWriteDedupe(cb, dk)
		if err != nil {
			return nil, err
		}
		if rec != nil && nowMs-rec.GetTsMs() <= w.GetDedupeWindowMs() {
			return &WriteResult{Version: rec.GetVersion(), Deduplicated: true}, nil
		}
	}
	info, err := readCollInfo(cb, ck)
	if err != nil {
		return nil, err
	}
	if err := checkConditions(cb, ck, info, w); err != nil {
		return nil, err
	}
	info.Version++
	for _, op := range w.GetOps() {
		if err := writeRecord(cb, ck, info, nowMs, op); err != nil {
			return nil, err
		}
	}
	if err := writeCollInfo(cb, ck, info); err != nil {
		return nil, err
	}
	if dk != nil {
		if err := recordWriteDedupe(root, cb, dk, info.GetVersion(), nowMs); err != nil {
			return nil, err
		}
	}
	if err := queueCopies(root, ch, w, info.GetVersion()); err != nil {
		return nil, err
	}
	ch.collectionMoved(w.GetCollection(), info.GetVersion())
	return &WriteResult{Version: info.GetVersion()}, nil
}

// checkConditions refuses the write, changing nothing, when a condition
// does not hold.
func checkConditions(cb sealed, ck []byte, info *fsmpb.CollectionInfo, w *fsmpb.RecordWrite) error {
	fail := func(reason string) error {
		e := &ConditionFailedError{Collection: w.GetCollection(), Version: info.GetVersion(), Reason: reason}
		for _, c := range w.GetConditions() {
			v, err := liveVersion(cb, ck, c.GetKey())
			if err != nil {
				return err
			}
			e.Records = append(e.Records, RecordVersion{Key: c.GetKey(), Version: v})
		}
		return reject(e)
	}
	if w.GetHasExpectedVersion() && w.GetExpectedVersion() != info.GetVersion() {
		return fail(fmt.Sprintf("expected collection version %d", w.GetExpectedVersion()))
	}
	for _, c := range w.GetConditions() {
		v, err := liveVersion(cb, ck, c.GetKey())
		if err != nil {
			return err
		}
		if v != c.GetVersion() {
			return fail(fmt.Sprintf("record %q is at version %d, expected %d", truncate(c.GetKey()), v, c.GetVersion()))
		}
	}
	return nil
}

// liveVersion is a record's version, 0 when it is absent or a tombstone.
func liveVersion(cb sealed, ck []byte, key string) (uint64, error) {
	rec, err := readRecord(cb, recordKey(ck, key))
	if err != nil || rec == nil || rec.GetDeleted() {
		return 0, err
	}
	return rec.GetVersion(), nil
}

// writeRecord applies one op at info's (new) version: the record's old
// state leaves the digest, the counts and the version index; its new state
// enters them.
func writeRecord(cb sealed, ck []byte, info *fsmpb.CollectionInfo, nowMs int64, op *fsmpb.RecordOp) error {
	rk := recordKey(ck, op.GetKey())
	old, err := readRecord(cb, rk)
	if err != nil {
		return err
	}
	if old != nil {
		if err := cb.Delete(byVersionKey(ck, old.GetVersion(), op.GetKey())); err != nil {
			return err
		}
		forgetRecord(info, op.GetKey(), old)
	}
	rec := &fsmpb.StoredRecord{Version: info.GetVersion(), Deleted: op.GetDelete(), TsMs: nowMs}
	if !op.GetDelete() {
		rec.Value, rec.Metadata = op.GetValue(), op.GetMetadata()
	}
	countRecord(info, op.GetKey(), rec)
	v, err := stored.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if err := cb.Put(rk, v); err != nil {
		return err
	}
	return cb.Put(byVersionKey(ck, rec.GetVersion(), op.GetKey()), nil)
}

// countRecord adds a record's state to the collection's counts and digest;
// forgetRecord takes it out again.
func countRecord(info *fsmpb.CollectionInfo, key string, rec *fsmpb.StoredRecord) {
	if rec.GetDeleted() {
		info.Tombstones++
		return
	}
	info.Live++
	info.Digest = xorDigest(info.GetDigest(), RecordHash(key, rec.GetVersion(), rec.GetValue()))
}

func forgetRecord(info *fsmpb.CollectionInfo, key string, rec *fsmpb.StoredRecord) {
	if rec.GetDeleted() {
		info.Tombstones--
		return
	}
	info.Live--
	info.Digest = xorDigest(info.GetDigest(), RecordHash(key, rec.GetVersion(), rec.GetValue()))
}

// RecordHash is one live record's part of a collection digest:
// SHA-256(uint16 big-endian len(key) || key || uint64 big-endian version ||
// value). A collection's digest is the XOR of its live records' hashes
// (all zeros when it has none), so a client holding a collection can
// compute it from what it holds, and the state machine keeps it up to
// date with one hash per record written.
func RecordHash(key string, version uint64, value []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(key))))
	h.Write([]byte(key))
	h.Write(binary.BigEndian.AppendUint64(nil, version))
	h.Write(value)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func xorDigest(d []byte, h [sha256.Size]byte) []byte {
	out := make([]byte, sha256.Size)
	copy(out, d)
	for i := range out {
		out[i] ^= h[i]
	}
	return out
}

func readRecord(cb sealed, rk []byte) (*fsmpb.StoredRecord, error) {
	v, err := cb.Get(rk)
	if err != nil || v == nil {
		return nil, err
	}
	return decodeRecord(rk, v)
}

func readCollInfo(cb sealed, ck []byte) (*fsmpb.CollectionInfo, error) {
	info := &fsmpb.CollectionInfo{}
	v, err := cb.Get(collInfoKey(ck))
	if err != nil || v == nil {
		return info, err
	}
	if err := proto.Unmarshal(v, info); err != nil {
		return nil, fmt.Errorf("%w: decode collection info %x: %v", ErrCorruptState, ck, err)
	}
	return info, nil
}

func writeCollInfo(cb sealed, ck []byte, info *fsmpb.CollectionInfo) error {
	v, err := stored.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode collection info: %w", err)
	}
	return cb.Put(collInfoKey(ck), v)
}

func readWriteDedupe(cb sealed, dk []byte) (*fsmpb.WriteDedupe, error) {
	v, err := cb.Get(dk)
	if err != nil || v == nil {
		return nil, err
	}
	return decodeWriteDedupe(v)
}

func decodeWriteDedupe(v []byte) (*fsmpb.WriteDedupe, error) {
	var rec fsmpb.WriteDedupe
	if err := proto.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("%w: decode write dedupe record: %v", ErrCorruptState, err)
	}
	return &rec, nil
}

// writeDedupeTs is a collection dedupe record's time, for gcDedupeIn.
func writeDedupeTs(v []byte) (int64, error) {
	rec, err := decodeWriteDedupe(v)
	return rec.GetTsMs(), err
}

func recordWriteDedupe(root *bolt.Bucket, cb sealed, dk []byte, version uint64, nowMs int64) error {
	v, err := stored.Marshal(&fsmpb.WriteDedupe{Version: version, TsMs: nowMs})
	if err != nil {
		return fmt.Errorf("encode write dedupe record: %w", err)
	}
	if err := cb.Put(dk, v); err != nil {
		return err
	}
	return sealed{root.Bucket(bucketCollectionExpiry)}.Put(expiryKey(nowMs, dk), nil)
}

// applyCompactTombstones drops tombstones at or below each item's cutoff
// and raises the collection's horizon. It works a whole version at a
// time, at most MaxCompactScan index keys per item, so the horizon only
// ever names a version all of whose tombstones are gone; the leader
// proposes again for what is left.
func applyCompactTombstones(root *bolt.Bucket, c *fsmpb.CompactTombstones) error {
	if err := ValidateCompactTombstones(c); err != nil {
		return reject(err)
	}
	cb := sealed{root.Bucket(bucketCollections)}
	owned, err := readRanges(root)
	if err != nil {
		return err
	}
	for _, it := range c.GetItems() {
		if !owned.upkeepAllowed(it.GetCollection()) {
			continue
		}
		if err := compactCollection(cb, it.GetCollection(), it.GetCutoffVersion()); err != nil {
			return err
		}
	}
	return nil
}

func compactCollection(cb sealed, collection string, cutoff uint64) error {
	ck := collectionKey(collection)
	info, err := readCollInfo(cb, ck)
	if err != nil {
		return err
	}
	cutoff = min(cutoff, info.GetVersion())
	if cutoff <= info.GetHorizon() {
		return nil
	}
	prefix := byVersionPrefix(ck)
	var (
		drop, pending [][2][]byte // version index key, record key
		cur           uint64
		scanned       int
		done          = cutoff // every version up to done is processed whole
		c             = cb.b.Cursor()
	)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		version, key, ok := splitByVersion(k[len(prefix):])
		if !ok {
			return fmt.Errorf("%w: version index key %x", ErrCorruptState, k)
		}
		if version > cutoff {
			break
		}
		if version != cur {
			drop, pending, cur = append(drop, pending...), nil, version
			if scanned >= MaxCompactScan {
				done = version - 1 // this version is left whole for the next command
				break
			}
		}
		scanned++
		rk := recordKey(ck, key)
		rec, err := readRecord(cb, rk)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("%w: version index names record %q, which is missing", ErrCorruptState, truncate(key))
		}
		if rec.GetDeleted() {
			pending = append(pending, [2][]byte{bytes.Clone(k), rk})
		}
	}
	if done == cutoff {
		drop = append(drop, pending...)
	}
	for _, t := range drop {
		if err := cb.Delete(t[0]); err != nil {
			return err
		}
		if err := cb.Delete(t[1]); err != nil {
			return err
		}
		info.Tombstones--
	}
	info.Horizon = max(info.GetHorizon(), done)
	return writeCollInfo(cb, ck, info)
}

// splitByVersion parses the suffix of a version index key.
func splitByVersion(suffix []byte) (version uint64, key string, ok bool) {
	if len(suffix) <= 8 {
		return 0, "", false
	}
	return binary.BigEndian.Uint64(suffix[:8]), string(suffix[8:]), true
}

// ErrConditionFailed marks a RecordWrite whose condition did not hold (see
// ConditionFailedError). Nothing was changed.
var ErrConditionFailed = errors.New("fsm: write condition failed")
