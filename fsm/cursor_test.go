package fsm

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestPrevKeyStepsOverEmptiedLeaves: in a write transaction whose deletes
// emptied leaves, walking back from a key finds the key before the
// deleted run (bbolt's own Prev returns nil there).
func TestPrevKeyStepsOverEmptiedLeaves(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := func(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)) }
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		for i := range 2000 {
			if err == nil {
				err = b.Put(key(i), make([]byte, 100))
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		deleteFrom int // deletes [deleteFrom, deleteTo) first
		deleteTo   int
		from       int
		want       int // -1: none
	}{
		{"nothing deleted", 0, 0, 1000, 999},
		{"a run of leaves emptied below", 500, 1500, 1500, 499},
		{"everything below emptied", 0, 1500, 1500, -1},
		{"at the first key", 0, 0, 0, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte("b"))
				for i := tc.deleteFrom; i < tc.deleteTo; i++ {
					if err := b.Delete(key(i)); err != nil {
						return err
					}
				}
				c := b.Cursor()
				k, _ := c.Seek(key(tc.from))
				got, _ := prevKey(c, k)
				switch {
				case tc.want < 0 && got != nil:
					t.Errorf("from %d: got key %d, want none", tc.from, binary.BigEndian.Uint64(got))
				case tc.want >= 0 && (got == nil || binary.BigEndian.Uint64(got) != uint64(tc.want)):
					t.Errorf("from %d: got %x, want key %d", tc.from, got, tc.want)
				}
				return errRollback // the next case starts from the full bucket
			})
			if err != errRollback {
				t.Fatal(err)
			}
		})
	}
}
