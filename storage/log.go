package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt marks stored bytes that fail their checksum or do not decode:
// they are never returned as data.
var ErrCorrupt = errors.New("storage: corrupt")

// errNotFound is the StableStore's "no such key": hashicorp/raft compares
// the error's text with "not found".
var errNotFound = errors.New("not found")

// Log is one group's Raft log (in the node's WAL) and stable store (in
// the node's stable file). It implements raft.LogStore and
// raft.StableStore. The appends of all groups queued at once share one WAL
// write and one fdatasync; a StoreLogs returns once its entries are
// durable.
type Log struct {
	e      *Engine
	id     uint64
	stable []byte // bucket of the stable store: key -> value
}

var (
	_ raft.LogStore    = (*Log)(nil)
	_ raft.StableStore = (*Log)(nil)
)

// Log returns group id's log, creating its stable bucket if need be.
func (e *Engine) Log(id uint64) (*Log, error) {
	l := &Log{e: e, id: id, stable: binary.BigEndian.AppendUint64([]byte("s"), id)}
	err := e.stable.do(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(l.stable)
		return err
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: group %d stable store: %w", id, err)
	}
	return l, nil
}

// FirstIndex implements raft.LogStore.
func (l *Log) FirstIndex() (uint64, error) {
	first, _ := l.e.wal.bounds(l.id)
	return first, nil
}

// LastIndex implements raft.LogStore.
func (l *Log) LastIndex() (uint64, error) {
	_, last := l.e.wal.bounds(l.id)
	return last, nil
}

// RecentEntryBytes is the mean stored size of the group's last 256
// entries, 0 for an empty log: what turns a size into a number of entries
// for the snapshot policy.
func (l *Log) RecentEntryBytes() int { return l.e.wal.recentEntryBytes(l.id, 256) }

// GetLog implements raft.LogStore. An entry that fails its checksum is an
// ErrCorrupt error, never an entry.
func (l *Log) GetLog(index uint64, out *raft.Log) error {
	if l.e.closed.Load() {
		return ErrClosed
	}
	if err := l.e.wal.read(l.id, index, out); err != nil {
		if errors.Is(err, raft.ErrLogNotFound) {
			return err
		}
		return fmt.Errorf("storage: group %d log index %d: %w", l.id, index, err)
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (l *Log) StoreLog(entry *raft.Log) error { return l.StoreLogs([]*raft.Log{entry}) }

// StoreLogs implements raft.LogStore: the entries are durable when it
// returns nil.
func (l *Log) StoreLogs(entries []*raft.Log) error {
	if len(entries) == 0 {
		return nil
	}
	bodies := make([][]byte, len(entries))
	for i, e := range entries {
		bodies[i] = encodeEntryRecord(l.id, e)
	}
	if err := l.e.wal.commit(bodies); err != nil {
		return fmt.Errorf("storage: group %d: store logs: %w", l.id, err)
	}
	return nil
}

// DeleteRange implements raft.LogStore. Raft deletes a prefix (compaction)
// or a suffix (a follower's conflicting entries), never a middle.
func (l *Log) DeleteRange(lo, hi uint64) error {
	first, last := l.e.wal.bounds(l.id)
	var body []byte
	switch {
	case first == 0 || hi < first || lo > last:
		return nil // nothing of it is here
	case lo <= first:
		body = encodeRangeRecord(recCompact, l.id, hi)
	case hi >= last:
		body = encodeRangeRecord(recTruncate, l.id, lo)
	default:
		return fmt.Errorf("storage: group %d: delete logs %d-%d inside %d-%d: only a prefix or a suffix can go", l.id, lo, hi, first, last)
	}
	if err := l.e.wal.commit([][]byte{body}); err != nil {
		return fmt.Errorf("storage: group %d: delete logs %d-%d: %w", l.id, lo, hi, err)
	}
	return nil
}

// Set implements raft.StableStore.
func (l *Log) Set(key, val []byte) error {
	err := l.e.stable.do(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.stable)
		if b == nil {
			return fmt.Errorf("group %d has no stable bucket", l.id)
		}
		return b.Put(key, Seal(key, val))
	}, nil)
	if err != nil {
		return fmt.Errorf("storage: group %d: stable set %q: %w", l.id, key, err)
	}
	return nil
}

// Get implements raft.StableStore.
func (l *Log) Get(key []byte) ([]byte, error) {
	if l.e.closed.Load() {
		return nil, ErrClosed
	}
	var out []byte
	err := l.e.stableDB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.stable)
		if b == nil {
			return errNotFound
		}
		v := b.Get(key)
		if v == nil {
			return errNotFound
		}
		var err error
		sealed, err := Unseal(key, v)
		out = append([]byte(nil), sealed...)
		return err
	})
	if errors.Is(err, errNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: group %d: stable get %q: %w", l.id, key, err)
	}
	return out, nil
}

// SetUint64 implements raft.StableStore.
func (l *Log) SetUint64(key []byte, val uint64) error {
	return l.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore.
func (l *Log) GetUint64(key []byte) (uint64, error) {
	v, err := l.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: group %d: stable %q is %d bytes, want 8", ErrCorrupt, l.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Reset drops every entry of the group's log (a non-voting replica about
// to be rebuilt from its leader); its stable store stays.
func (l *Log) Reset() error {
	if err := l.e.wal.commit([][]byte{encodeRangeRecord(recTruncate, l.id, 0)}); err != nil {
		return fmt.Errorf("storage: group %d: reset log: %w", l.id, err)
	}
	return nil
}
