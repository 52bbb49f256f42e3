package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt marks stored bytes that fail their checksum or do not decode:
// they are never returned as data.
var ErrCorrupt = errors.New("storage: corrupt")

// errNotFound is the StableStore's "no such key": hashicorp/raft compares
// the error's text with "not found".
var errNotFound = errors.New("not found")

// Log is one group's Raft log and stable store in the node's shared log
// file. It implements raft.LogStore and raft.StableStore. Every write goes
// through the log committer, so the appends of all groups in one round
// share one commit and its fsyncs; a StoreLogs returns once its entries
// are fsynced.
type Log struct {
	e      *Engine
	id     uint64
	logs   []byte // bucket of entries: index (8, big-endian) -> encoded entry
	stable []byte // bucket of the stable store: key -> value

	first, last atomic.Uint64 // cached: set by the committer after each commit
}

var (
	_ raft.LogStore    = (*Log)(nil)
	_ raft.StableStore = (*Log)(nil)
)

// Log returns group id's log, creating its buckets if need be.
func (e *Engine) Log(id uint64) (*Log, error) {
	l := &Log{
		e:      e,
		id:     id,
		logs:   binary.BigEndian.AppendUint64([]byte("l"), id),
		stable: binary.BigEndian.AppendUint64([]byte("s"), id),
	}
	var first, last uint64
	err := e.log.do(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(l.logs)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(l.stable); err != nil {
			return err
		}
		first, last = bounds(b)
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: group %d log: %w", id, err)
	}
	l.first.Store(first)
	l.last.Store(last)
	return l, nil
}

// bounds is the first and last index in a log bucket, 0, 0 when empty.
func bounds(b *bolt.Bucket) (first, last uint64) {
	c := b.Cursor()
	if k, _ := c.First(); len(k) == 8 {
		first = binary.BigEndian.Uint64(k)
	}
	if k, _ := c.Last(); len(k) == 8 {
		last = binary.BigEndian.Uint64(k)
	}
	return first, last
}

// FirstIndex implements raft.LogStore.
func (l *Log) FirstIndex() (uint64, error) { return l.first.Load(), nil }

// LastIndex implements raft.LogStore.
func (l *Log) LastIndex() (uint64, error) { return l.last.Load(), nil }

// GetLog implements raft.LogStore. An entry that fails its checksum is an
// ErrCorrupt error, never an entry.
func (l *Log) GetLog(index uint64, out *raft.Log) error {
	if l.e.closed.Load() {
		return ErrClosed
	}
	return l.e.logDB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.logs)
		if b == nil {
			return raft.ErrLogNotFound
		}
		v := b.Get(binary.BigEndian.AppendUint64(nil, index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		if err := decodeEntry(index, v, out); err != nil {
			return fmt.Errorf("group %d log index %d: %w", l.id, index, err)
		}
		return nil
	})
}

// StoreLog implements raft.LogStore.
func (l *Log) StoreLog(entry *raft.Log) error { return l.StoreLogs([]*raft.Log{entry}) }

// StoreLogs implements raft.LogStore: the entries are durable when it
// returns nil.
func (l *Log) StoreLogs(entries []*raft.Log) error {
	if len(entries) == 0 {
		return nil
	}
	encoded := make([][]byte, len(entries))
	for i, e := range entries {
		encoded[i] = encodeEntry(e)
	}
	var first, last uint64
	err := l.e.log.do(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.logs)
		if b == nil {
			return fmt.Errorf("group %d has no log bucket", l.id)
		}
		b.FillPercent = 1 // appends at the end: full pages, no half-empty splits
		for i, e := range entries {
			if err := b.Put(binary.BigEndian.AppendUint64(nil, e.Index), encoded[i]); err != nil {
				return err
			}
		}
		first, last = bounds(b)
		return nil
	}, func() { l.first.Store(first); l.last.Store(last) })
	if err != nil {
		return fmt.Errorf("storage: group %d: store logs: %w", l.id, err)
	}
	return nil
}

// DeleteRange implements raft.LogStore.
func (l *Log) DeleteRange(lo, hi uint64) error {
	var first, last uint64
	err := l.e.log.do(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.logs)
		if b == nil {
			return fmt.Errorf("group %d has no log bucket", l.id)
		}
		c := b.Cursor()
		for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, lo)); k != nil && binary.BigEndian.Uint64(k) <= hi; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		first, last = bounds(b)
		return nil
	}, func() { l.first.Store(first); l.last.Store(last) })
	if err != nil {
		return fmt.Errorf("storage: group %d: delete logs %d-%d: %w", l.id, lo, hi, err)
	}
	return nil
}

// Set implements raft.StableStore.
func (l *Log) Set(key, val []byte) error {
	err := l.e.log.do(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.stable)
		if b == nil {
			return fmt.Errorf("group %d has no stable bucket", l.id)
		}
		return b.Put(key, sealValue(key, val))
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
	err := l.e.logDB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.stable)
		if b == nil {
			return errNotFound
		}
		v := b.Get(key)
		if v == nil {
			return errNotFound
		}
		var err error
		out, err = openValue(key, v)
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// An entry is stored as
//
//	crc32c (4) | term (8) | type (1) | appended at, Unix ns (8) | data length (4) | data | extensions
//
// big-endian, the CRC covering the index (the key) and everything after it,
// so an entry that is damaged, cut short or found under another index
// fails.
const entryHeaderLen = 4 + 8 + 1 + 8 + 4

func encodeEntry(e *raft.Log) []byte {
	b := make([]byte, entryHeaderLen, entryHeaderLen+len(e.Data)+len(e.Extensions))
	binary.BigEndian.PutUint64(b[4:], e.Term)
	b[12] = byte(e.Type)
	var at int64
	if !e.AppendedAt.IsZero() {
		at = e.AppendedAt.UnixNano()
	}
	binary.BigEndian.PutUint64(b[13:], uint64(at))
	binary.BigEndian.PutUint32(b[21:], uint32(len(e.Data)))
	b = append(append(b, e.Data...), e.Extensions...)
	binary.BigEndian.PutUint32(b, entryCRC(e.Index, b[4:]))
	return b
}

func entryCRC(index uint64, rest []byte) uint32 {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], index)
	return crc32.Update(crc32.Checksum(key[:], castagnoli), castagnoli, rest)
}

// decodeEntry checks and copies a stored entry (v is only valid inside its
// transaction).
func decodeEntry(index uint64, v []byte, out *raft.Log) error {
	if len(v) < entryHeaderLen {
		return fmt.Errorf("%w: entry of %d bytes", ErrCorrupt, len(v))
	}
	if binary.BigEndian.Uint32(v) != entryCRC(index, v[4:]) {
		return fmt.Errorf("%w: entry checksum mismatch", ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint32(v[21:]))
	if n > len(v)-entryHeaderLen {
		return fmt.Errorf("%w: data length %d past the entry", ErrCorrupt, n)
	}
	out.Index = index
	out.Term = binary.BigEndian.Uint64(v[4:])
	out.Type = raft.LogType(v[12])
	out.AppendedAt = time.Time{}
	if at := int64(binary.BigEndian.Uint64(v[13:])); at != 0 {
		out.AppendedAt = time.Unix(0, at)
	}
	body := v[entryHeaderLen:]
	out.Data = append([]byte(nil), body[:n]...)
	out.Extensions = nil
	if len(body) > n {
		out.Extensions = append([]byte(nil), body[n:]...)
	}
	return nil
}

// sealValue prefixes a stable-store value with a CRC of key and value.
func sealValue(key, val []byte) []byte {
	b := make([]byte, 4, 4+len(val))
	b = append(b, val...)
	binary.BigEndian.PutUint32(b, crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, val))
	return b
}

func openValue(key, v []byte) ([]byte, error) {
	if len(v) < 4 || binary.BigEndian.Uint32(v) != crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, v[4:]) {
		return nil, fmt.Errorf("%w: stable value checksum mismatch", ErrCorrupt)
	}
	return append([]byte(nil), v[4:]...), nil
}
