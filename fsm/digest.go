package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Digest hashes every data bucket. Replicas that applied the same log prefix
// have the same digest; tests and the fault checker compare them.
func (f *FSM) Digest() (string, error) {
	var digest string
	err := f.view(func(root *bolt.Bucket) error {
		var err error
		digest, err = digestTx(root)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("fsm: digest: %w", err)
	}
	return digest, nil
}

// DigestWithIndex is Digest together with the applied index of the state
// it hashed, read in the same transaction: a pair that can be compared
// with another replica's even while entries are being applied (reading the
// index apart from the digest could pair an older digest with a newer
// index).
func (f *FSM) DigestWithIndex() (string, uint64, error) {
	var (
		digest  string
		applied uint64
	)
	err := f.view(func(root *bolt.Bucket) error {
		var err error
		digest, err = digestTx(root)
		applied = readU64(root.Bucket(bucketMeta), keyAppliedIndex)
		return err
	})
	if err != nil {
		return "", 0, fmt.Errorf("fsm: digest: %w", err)
	}
	return digest, applied, nil
}

// digestTx is Digest of a root bucket, so a test can digest a transaction
// it has not committed.
func digestTx(root *bolt.Bucket) (string, error) {
	h := sha256.New()
	for _, name := range dataBuckets {
		h.Write(name)
		err := root.Bucket(name).ForEach(func(k, v []byte) error {
			writeLenPrefixed(h, k)
			writeLenPrefixed(h, v)
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeLenPrefixed(w io.Writer, b []byte) {
	w.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
	w.Write(b)
}
