package seqgen

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var bucket = []byte("b")

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "seq.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bucket)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func next(t *testing.T, db *bolt.DB, timeline string, now int64) (uint64, int64) {
	t.Helper()
	var seq uint64
	var ts int64
	err := db.Update(func(tx *bolt.Tx) (err error) {
		seq, ts, err = Next(rawStore{tx.Bucket(bucket)}, []byte(timeline), now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq, ts
}

func TestNextIsGapFreePerTimeline(t *testing.T) {
	db := openDB(t)
	steps := []struct {
		timeline string
		now      int64
		wantSeq  uint64
		wantTs   int64
	}{
		{"a", 100, 1, 100},
		{"a", 101, 2, 101},
		{"b", 50, 1, 50},
		{"a", 90, 3, 101}, // clock went back: timestamp holds
		{"b", 60, 2, 60},
		{"a", 200, 4, 200},
	}
	for i, s := range steps {
		seq, ts := next(t, db, s.timeline, s.now)
		if seq != s.wantSeq || ts != s.wantTs {
			t.Fatalf("step %d (%s): got seq %d ts %d, want seq %d ts %d", i, s.timeline, seq, ts, s.wantSeq, s.wantTs)
		}
	}
}

func TestRolledBackTransactionConsumesNoSeq(t *testing.T) {
	db := openDB(t)
	next(t, db, "a", 1)
	errAbort := errors.New("abort")
	err := db.Update(func(tx *bolt.Tx) error {
		if _, _, err := Next(rawStore{tx.Bucket(bucket)}, []byte("a"), 2); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("got %v, want the abort", err)
	}
	if seq, _ := next(t, db, "a", 3); seq != 2 {
		t.Fatalf("after a rollback got seq %d, want 2", seq)
	}
}

func TestGetOfUnknownOrCorruptCounter(t *testing.T) {
	db := openDB(t)
	err := db.Update(func(tx *bolt.Tx) error {
		b := rawStore{tx.Bucket(bucket)}
		if got, err := Get(b, []byte("never")); err != nil || got != (Counter{}) {
			t.Errorf("unknown counter: %+v, %v", got, err)
		}
		if err := b.Put([]byte("short"), []byte{1, 2, 3}); err != nil {
			return err
		}
		if _, err := Get(b, []byte("short")); err == nil {
			t.Error("a 3-byte counter was accepted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rawStore is a bbolt bucket as a Store, values as they are.
type rawStore struct{ b *bolt.Bucket }

func (r rawStore) Get(k []byte) ([]byte, error) { return r.b.Get(k), nil }
func (r rawStore) Put(k, v []byte) error        { return r.b.Put(k, v) }
