package fsm

import (
	"bytes"
	"encoding/hex"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Record is one record (or tombstone) as read.
type Record struct {
	Key      string
	Version  uint64
	Deleted  bool
	Value    []byte
	Metadata map[string]string
	TsMs     int64
}

// CollectionState is what every collection read reports besides records.
type CollectionState struct {
	Version uint64
	// Horizon: tombstones at or below it were compacted.
	Horizon uint64
	// Digest is the hex XOR of RecordHash over the live records.
	Digest     string
	Live       uint64
	Tombstones uint64
}

func collectionState(info *fsmpb.CollectionInfo) CollectionState {
	d := info.GetDigest()
	if len(d) == 0 {
		d = make([]byte, 32)
	}
	return CollectionState{
		Version:    info.GetVersion(),
		Horizon:    info.GetHorizon(),
		Digest:     hex.EncodeToString(d),
		Live:       info.GetLive(),
		Tombstones: info.GetTombstones(),
	}
}

// GetResult is what GetRecords and ListRecords return.
type GetResult struct {
	CollectionState
	// Records holds live records only.
	Records []Record
	// More: ListRecords stopped early; go on after NextAfterKey.
	More         bool
	NextAfterKey string
}

// GetRecords reads the live records among keys (absent and deleted ones
// are left out), with the collection's state, from the local replica.
func (f *FSM) GetRecords(collection string, keys []string) (GetResult, error) {
	if err := ValidateCollectionID(collection); err != nil {
		return GetResult{}, err
	}
	for i, k := range keys {
		if err := ValidateRecordKey(k); err != nil {
			return GetResult{}, fmt.Errorf("key %d: %w", i, err)
		}
	}
	var res GetResult
	err := f.viewCollection(collection, func(cb sealed, ck []byte, info *fsmpb.CollectionInfo) error {
		res.CollectionState = collectionState(info)
		for _, k := range keys {
			rec, err := readRecord(cb, recordKey(ck, k))
			if err != nil {
				return err
			}
			if rec != nil && !rec.GetDeleted() {
				res.Records = append(res.Records, recordOf(k, rec))
			}
		}
		return nil
	})
	if err != nil {
		return GetResult{}, fmt.Errorf("fsm: get %q: %w", truncate(collection), err)
	}
	return res, nil
}

// ListRecords pages through the live records in key order, after afterKey
// ("" from the first): at most limit records, and past the first, at most
// maxBytes of values (0: no byte bound).
func (f *FSM) ListRecords(collection, afterKey string, limit, maxBytes int) (GetResult, error) {
	if err := ValidateCollectionID(collection); err != nil {
		return GetResult{}, err
	}
	if limit < 1 {
		return GetResult{}, fmt.Errorf("%w: limit %d is below 1", ErrInvalidArgument, limit)
	}
	var res GetResult
	err := f.viewCollection(collection, func(cb sealed, ck []byte, info *fsmpb.CollectionInfo) error {
		res.CollectionState = collectionState(info)
		prefix := recordPrefix(ck)
		c := cb.b.Cursor()
		start := prefix
		if afterKey != "" {
			start = append(recordKey(ck, afterKey), 0) // the first key after afterKey
		}
		size := 0
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(res.Records) >= limit || (maxBytes > 0 && size >= maxBytes) {
				res.More = true
				break
			}
			raw, err := unseal(k, v)
			if err != nil {
				return err
			}
			rec, err := decodeRecord(k, raw)
			if err != nil {
				return err
			}
			key := string(k[len(prefix):])
			res.NextAfterKey = key
			if rec.GetDeleted() {
				continue
			}
			res.Records = append(res.Records, recordOf(key, rec))
			size += len(rec.GetValue())
		}
		if !res.More {
			res.NextAfterKey = ""
		}
		return nil
	})
	if err != nil {
		return GetResult{}, fmt.Errorf("fsm: list %q: %w", truncate(collection), err)
	}
	return res, nil
}

// SyncStatus says how a Sync page relates to the collection.
type SyncStatus int

const (
	// SyncOK: the page reaches the head version.
	SyncOK SyncStatus = iota + 1
	// SyncUpToDate: since == version; no changes.
	SyncUpToDate
	// SyncMore: changes remain past the page's version.
	SyncMore
	// SyncReset: since is below the compaction horizon.
	SyncReset
	// SyncAhead: since > version.
	SyncAhead
)

func (s SyncStatus) String() string {
	switch s {
	case SyncOK:
		return "OK"
	case SyncUpToDate:
		return "UP_TO_DATE"
	case SyncMore:
		return "MORE"
	case SyncReset:
		return "RESET"
	case SyncAhead:
		return "AHEAD"
	}
	return fmt.Sprintf("SyncStatus(%d)", int(s))
}

// SyncResult is a page of a collection's changes.
type SyncResult struct {
	CollectionState
	Status SyncStatus
	// PageVersion is the version the page brings a client to: the head for
	// OK and UP_TO_DATE, the last version it holds whole for MORE.
	PageVersion uint64
	// Changes holds the latest state of each record changed after since,
	// in version order; tombstones have Deleted set.
	Changes []Record
}

// SyncRecords returns the records changed after since, in version order,
// from the local replica. A page holds whole writes only: it stops at a
// version boundary once it has limit records or, past the first write,
// maxBytes of values (0: no byte bound), so the version it claims is one
// whose changes it holds completely (a single write may exceed limit, up to
// MaxRecordOps records). From since 0 tombstones are left out: a client
// holding nothing has nothing to delete. Such a client is answered RESET
// (read the collection whole) when tombstones were compacted and its first
// page would not reach the horizon: its next page, from below the horizon,
// could not be told from a client that missed a compacted deletion.
func (f *FSM) SyncRecords(collection string, since uint64, limit, maxBytes int) (SyncResult, error) {
	if err := ValidateCollectionID(collection); err != nil {
		return SyncResult{}, err
	}
	if limit < 1 {
		return SyncResult{}, fmt.Errorf("%w: limit %d is below 1", ErrInvalidArgument, limit)
	}
	var res SyncResult
	err := f.viewCollection(collection, func(cb sealed, ck []byte, info *fsmpb.CollectionInfo) error {
		res.CollectionState = collectionState(info)
		head := info.GetVersion()
		switch {
		case since > head:
			res.Status = SyncAhead
			return nil
		case since == head:
			res.Status, res.PageVersion = SyncUpToDate, head
			return nil
		case since > 0 && since < info.GetHorizon():
			res.Status = SyncReset
			return nil
		}
		if err := syncPage(cb, ck, since, limit, maxBytes, &res); err != nil {
			return err
		}
		if res.Status == SyncMore && res.PageVersion < info.GetHorizon() {
			res = SyncResult{CollectionState: res.CollectionState, Status: SyncReset}
		}
		return nil
	})
	if err != nil {
		return SyncResult{}, fmt.Errorf("fsm: sync %q: %w", truncate(collection), err)
	}
	return res, nil
}

func syncPage(cb sealed, ck []byte, since uint64, limit, maxBytes int, res *SyncResult) error {
	prefix := byVersionPrefix(ck)
	c := cb.b.Cursor()
	var (
		cur, done  uint64 // the version being read; the last one read whole
		seen, size int
	)
	res.Status, res.PageVersion = SyncOK, res.Version
	for k, _ := c.Seek(append(bytes.Clone(prefix), u64(since+1)...)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		version, key, ok := splitByVersion(k[len(prefix):])
		if !ok {
			return fmt.Errorf("%w: version index key %x", ErrCorruptState, k)
		}
		if version != cur {
			done, cur = cur, version
			if done != 0 && (seen >= limit || (maxBytes > 0 && size >= maxBytes)) {
				// The page holds versions up to done whole, and nothing of cur.
				res.Status, res.PageVersion = SyncMore, done
				return nil
			}
		}
		seen++
		rec, err := readRecord(cb, recordKey(ck, key))
		if err != nil {
			return err
		}
		if rec == nil || rec.GetVersion() != version {
			return fmt.Errorf("%w: version index names %q at version %d, which the record does not have", ErrCorruptState, truncate(key), version)
		}
		if rec.GetDeleted() && since == 0 {
			continue
		}
		res.Changes = append(res.Changes, recordOf(key, rec))
		size += len(rec.GetValue())
	}
	return nil
}

// viewCollection runs fn on a collection in a read transaction.
func (f *FSM) viewCollection(collection string, fn func(cb sealed, ck []byte, info *fsmpb.CollectionInfo) error) error {
	return f.view(func(root *bolt.Bucket) error {
		cb := sealed{root.Bucket(bucketCollections)}
		ck := collectionKey(collection)
		info, err := readCollInfo(cb, ck)
		if err != nil {
			return err
		}
		return fn(cb, ck, info)
	})
}

func decodeRecord(k, raw []byte) (*fsmpb.StoredRecord, error) {
	var rec fsmpb.StoredRecord
	if err := proto.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("%w: decode record %x: %v", ErrCorruptState, k, err)
	}
	return &rec, nil
}

func recordOf(key string, rec *fsmpb.StoredRecord) Record {
	return Record{
		Key:      key,
		Version:  rec.GetVersion(),
		Deleted:  rec.GetDeleted(),
		Value:    bytes.Clone(rec.GetValue()),
		Metadata: rec.GetMetadata(),
		TsMs:     rec.GetTsMs(),
	}
}

// CompactionPolicy says which tombstones the leader compacts: those older
// than MaxAgeMs (0: no age limit), and beyond the newest Keep of a
// collection (0: no count limit).
type CompactionPolicy struct {
	MaxAgeMs int64
	Keep     uint64
}

// CompactionCandidates scans up to maxScan keys of the collections after
// resume ("" from the first) and returns at most maxItems collections with
// tombstones the policy drops, each with its cutoff version, and the last
// collection it read, after which the next scan resumes ("" when the pass
// reached the end).
func (f *FSM) CompactionCandidates(p CompactionPolicy, nowMs int64, resume string, maxItems, maxScan int) ([]*fsmpb.CompactItem, string, error) {
	if p == (CompactionPolicy{}) {
		return nil, "", nil
	}
	var (
		out  []*fsmpb.CompactItem
		next string
	)
	err := f.view(func(root *bolt.Bucket) error {
		cb := sealed{root.Bucket(bucketCollections)}
		c := cb.b.Cursor()
		k, _ := c.First()
		if resume != "" {
			k, _ = c.Seek(timelineEnd(collectionKey(resume)))
		}
		scanned, last := 0, ""
		for k != nil {
			id, ok := timelineIDOf(k)
			if !ok {
				return fmt.Errorf("%w: collection key %x", ErrCorruptState, k)
			}
			if len(out) >= maxItems || scanned >= maxScan {
				next = last // the next scan starts after the last one read
				return nil
			}
			last = id
			ck := collectionKey(id)
			info, err := readCollInfo(cb, ck)
			if err != nil {
				return err
			}
			scanned++
			if info.GetTombstones() > 0 && (p.MaxAgeMs > 0 || info.GetTombstones() > p.Keep && p.Keep > 0) {
				cutoff, n, err := compactionCutoff(cb, ck, info, p, nowMs)
				if err != nil {
					return err
				}
				scanned += n
				if cutoff > info.GetHorizon() {
					out = append(out, &fsmpb.CompactItem{Collection: id, CutoffVersion: cutoff})
				}
			}
			k, _ = c.Seek(timelineEnd(ck))
		}
		return nil
	})
	if err != nil {
		return nil, resume, fmt.Errorf("fsm: compaction candidates: %w", err)
	}
	return out, next, nil
}

// compactionCutoff walks a collection's tombstones in version order and
// returns the newest version the policy drops (0: none), and how many
// index keys it read.
func compactionCutoff(cb sealed, ck []byte, info *fsmpb.CollectionInfo, p CompactionPolicy, nowMs int64) (uint64, int, error) {
	excess := uint64(0)
	if p.Keep > 0 && info.GetTombstones() > p.Keep {
		excess = info.GetTombstones() - p.Keep
	}
	prefix := byVersionPrefix(ck)
	c := cb.b.Cursor()
	var cutoff uint64
	var seen uint64
	n := 0
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < MaxCompactScan; k, _ = c.Next() {
		n++
		version, key, ok := splitByVersion(k[len(prefix):])
		if !ok {
			return 0, n, fmt.Errorf("%w: version index key %x", ErrCorruptState, k)
		}
		rec, err := readRecord(cb, recordKey(ck, key))
		if err != nil {
			return 0, n, err
		}
		if rec == nil || !rec.GetDeleted() {
			continue
		}
		old := p.MaxAgeMs > 0 && rec.GetTsMs() < nowMs-p.MaxAgeMs
		if seen >= excess && !old {
			break
		}
		seen++
		cutoff = version
	}
	return cutoff, n, nil
}
