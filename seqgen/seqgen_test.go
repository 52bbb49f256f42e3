package seqgen

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "seq.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(CreateBucket); err != nil {
		t.Fatal(err)
	}
	return db
}

func next(t *testing.T, db *bolt.DB, timeline string, now int64) (uint64, int64) {
	t.Helper()
	var seq uint64
	var ts int64
	err := db.Update(func(tx *bolt.Tx) error {
		c, err := In(tx)
		if err != nil {
			return err
		}
		seq, ts, err = c.Next([]byte(timeline), now)
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
		c, err := In(tx)
		if err != nil {
			return err
		}
		if _, _, err := c.Next([]byte("a"), 2); err != nil {
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

func TestGetOfUnknownTimelineIsZero(t *testing.T) {
	db := openDB(t)
	err := db.View(func(tx *bolt.Tx) error {
		c, err := In(tx)
		if err != nil {
			return err
		}
		got, err := c.Get([]byte("never"))
		if err != nil {
			return err
		}
		if got != (Counter{}) {
			t.Errorf("got %+v, want zero", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestInWithoutBucket(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "empty.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		_, err := In(tx)
		return err
	})
	if !errors.Is(err, ErrNoBucket) {
		t.Fatalf("got %v, want ErrNoBucket", err)
	}
}
