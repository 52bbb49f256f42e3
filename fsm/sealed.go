package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/storage"
)

// ErrCorruptState marks a stored value that fails its checksum: the bytes
// on disk are not what this replica wrote. It is an error, never data.
var ErrCorruptState = errors.New("fsm: stored value fails its checksum")

// seal is v as stored under k (storage.Seal: a CRC-32C of key and value in
// front).
func seal(k, v []byte) []byte { return storage.Seal(k, v) }

// unseal checks a stored value and returns what was sealed (inside the
// transaction's memory, like any bbolt value).
func unseal(k, stored []byte) ([]byte, error) {
	v, err := storage.Unseal(k, stored)
	if err != nil {
		return nil, fmt.Errorf("%w: key %x", ErrCorruptState, k)
	}
	return v, nil
}

// sealed is a data bucket whose values carry checksums. It also serves
// seqgen as its store.
type sealed struct{ b *bolt.Bucket }

// Get returns the value at k, nil if there is none.
func (s sealed) Get(k []byte) ([]byte, error) {
	v := s.b.Get(k)
	if v == nil {
		return nil, nil
	}
	return unseal(k, v)
}

// Put stores v at k (and logs it for a move tracking k's range).
func (s sealed) Put(k, v []byte) error {
	if err := noteWrite(s.b, k); err != nil {
		return err
	}
	return s.b.Put(k, seal(k, v))
}

// Delete removes k (and logs it for a move tracking k's range).
func (s sealed) Delete(k []byte) error {
	if err := noteWrite(s.b, k); err != nil {
		return err
	}
	return s.b.Delete(k)
}

// GetU64 returns the 8-byte integer at k, 0 if there is none.
func (s sealed) GetU64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	switch {
	case err != nil:
		return 0, err
	case v == nil:
		return 0, nil
	case len(v) != 8:
		return 0, fmt.Errorf("%w: value at %x is %d bytes, want 8", ErrCorruptState, k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// stored encodes a value for the state. Deterministic: replicas must store
// the same bytes for the same command (the digests compare them), and Go
// encodes maps (metadata) in its random map order otherwise.
var stored = proto.MarshalOptions{Deterministic: true}

// prefixedKeys returns copies of s's keys that start with prefix, in key
// order: at most limit (0: no bound), and only up to the first whose
// suffix after prefix fails while (nil: all pass). bbolt cursors must not
// delete while they walk, so callers collect first and delete after.
func prefixedKeys(s sealed, prefix []byte, limit int, while func(suffix []byte) bool) [][]byte {
	var out [][]byte
	c := s.b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && (limit == 0 || len(out) < limit); k, _ = c.Next() {
		if while != nil && !while(k[len(prefix):]) {
			break
		}
		out = append(out, bytes.Clone(k))
	}
	return out
}

// deleteKeys removes keys from s.
func deleteKeys(s sealed, keys [][]byte) error {
	for _, k := range keys {
		if err := s.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
