package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// flat is the layout the tests' files have, as a syncstore state does:
// top-level buckets of keys and values.
var flat = Options{MaxBucketDepth: 1}

// testBuckets are the buckets the tests fill; createBuckets also makes a
// small "meta" bucket beside them.
var testBuckets = [][]byte{[]byte("b0"), []byte("b1"), []byte("b2"), []byte("b3"), []byte("b4"), []byte("b5")}

func createBuckets(tx *bolt.Tx) error {
	meta, err := tx.CreateBucket([]byte("meta"))
	if err != nil {
		return err
	}
	if err := meta.Put([]byte("version"), binary.BigEndian.AppendUint64(nil, 1)); err != nil {
		return err
	}
	for _, name := range testBuckets {
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	return nil
}

// checkFile runs File on the file at path.
func checkFile(tb testing.TB, path string, opts Options) error {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	return File(f, opts)
}

// boltCheck opens the file at path read-only as a caller of File would and
// returns what tx.Check reports and an error if bbolt cannot open it.
func boltCheck(path string) (problems []error, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() { // drained to the end: the checker blocks on it
			problems = append(problems, err)
		}
		return readAll(tx)
	})
	return problems, err
}

// readAll reads every key and value of every bucket, nested ones included.
func readAll(tx *bolt.Tx) error {
	h := fnv.New64a()
	var read func(b *bolt.Bucket) error
	read = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			h.Write(k)
			h.Write(v)
			if nested := b.Bucket(k); nested != nil {
				return read(nested)
			}
			return nil
		})
	}
	return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return read(b) })
}

// accepted fails the test unless File accepts the file at path with the
// tests' layout and bbolt then checks it clean.
func accepted(t *testing.T, path string) {
	t.Helper()
	if err := checkFile(t, path, flat); err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	problems, err := boltCheck(path)
	if err == nil {
		err = errors.Join(problems...)
	}
	if err != nil {
		t.Fatalf("%s: accepted, but bbolt: %v", filepath.Base(path), err)
	}
}

// File must accept whatever bbolt itself writes, or a caller would refuse
// a good file: files of every shape bbolt makes (branch levels, overflow
// pages, inline and page buckets, free pages, a stored freelist, several
// page sizes) pass it and tx.Check, and reopen for writing.
func TestFileAcceptsWhatBboltWrites(t *testing.T) {
	cases := []struct {
		name           string
		pageSize       int
		noFreelistSync bool
		keys, valueLen int
		deleteEvery    int // delete every nth key; -n: all but every nth
	}{
		{"empty buckets", 0, true, 0, 0, 0},
		{"many small keys", 0, true, 20000, 20, 0},
		{"1 KiB pages, deep tree", 1024, true, 20000, 10, 0},
		{"overflow values", 1024, true, 50, 5000, 0},
		{"deletions leave free pages", 0, true, 5000, 100, 2},
		{"stored freelist", 0, false, 5000, 100, 3},
		{"16 KiB pages", 16384, true, 3000, 300, 5},
		// Deleting all but every 50th key merges siblings and collapses roots.
		{"1 KiB pages, most keys deleted", 1024, true, 20000, 10, -50},
		{"most keys deleted, stored freelist", 0, false, 20000, 50, -50},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: tc.pageSize, NoFreelistSync: tc.noFreelistSync})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			err = db.Update(createBuckets)
			for i := 0; err == nil && i < tc.keys; i += 500 {
				err = db.Update(func(tx *bolt.Tx) error {
					for j := i; j < min(i+500, tc.keys); j++ {
						b := tx.Bucket(testBuckets[j%len(testBuckets)])
						v := make([]byte, rng.IntN(tc.valueLen+1))
						if err := b.Put(fmt.Appendf(nil, "key-%08d", rng.IntN(1<<30)), v); err != nil {
							return err
						}
					}
					return nil
				})
			}
			if err == nil && tc.deleteEvery > 0 {
				err = db.Update(func(tx *bolt.Tx) error {
					c := tx.Bucket(testBuckets[0]).Cursor()
					i := 0
					for k, _ := c.First(); k != nil; k, _ = c.Next() {
						i++
						if every := tc.deleteEvery; every > 0 && i%every == 0 || every < 0 && i%-every != 0 {
							if err := c.Delete(); err != nil {
								return err
							}
						}
					}
					return nil
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			// The shapes the case is about are really there.
			var st bolt.BucketStats
			db.View(func(tx *bolt.Tx) error { st = tx.Bucket(testBuckets[0]).Stats(); return nil })
			switch {
			case tc.keys > 10000 && st.BranchPageN == 0:
				t.Fatalf("no branch pages: %+v", st)
			case tc.valueLen > 1024 && st.LeafOverflowN == 0:
				t.Fatalf("no overflow pages: %+v", st)
			case tc.deleteEvery != 0 && db.Stats().FreePageN+db.Stats().PendingPageN == 0:
				t.Fatal("no free pages")
			}
			// Both the live file and what WriteTo makes of it.
			snap := filepath.Join(t.TempDir(), "snap.db")
			err = db.View(func(tx *bolt.Tx) error { return tx.CopyFile(snap, 0o600) })
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if m, err := parseMeta(raw, 0); err != nil || (m.freelist != noFreelist) == tc.noFreelistSync {
				t.Fatalf("freelist page %d (%v), NoFreelistSync %v", m.freelist, err, tc.noFreelistSync)
			}
			for _, p := range []string{path, snap} {
				accepted(t, p)
			}
			// The copy reopens for writing (which scans for free pages) and
			// reads back.
			db, err = bolt.Open(snap, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(testBuckets[0]).Put([]byte("reopened"), nil) })
			if err == nil {
				err = db.View(readAll)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The layout constants match what bbolt writes.
func TestLayout(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(createBuckets); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		err := db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(testBuckets[i%3]).Put(fmt.Appendf(nil, "key %d", i), fmt.Appendf(nil, "value %d", i))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	var txid int
	var size int64
	var dbPageSize int
	err = db.View(func(tx *bolt.Tx) error {
		txid, size, dbPageSize = tx.ID(), tx.Size(), tx.DB().Info().PageSize
		_, err := tx.WriteTo(&buf)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	if !LooksLikeBolt(raw) {
		t.Fatalf("a bbolt file does not look like one: %x", raw[:HeaderLen])
	}
	m0, err := parseMeta(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	ps := int(m0.pageSize)
	m1, err := parseMeta(raw[ps:], 1)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case ps != dbPageSize:
		t.Fatalf("page size %d, bbolt says %d", ps, dbPageSize)
	case m0.tx != uint64(txid) || m1.tx != m0.tx-1:
		t.Fatalf("txids %d, %d; the transaction is %d", m0.tx, m1.tx, txid)
	case int64(m0.hwm)*int64(ps) != size || int64(len(raw)) != size:
		t.Fatalf("high water mark %d pages of %d, tx size %d, file %d", m0.hwm, ps, size, len(raw))
	case m0.freelist != noFreelist:
		t.Fatalf("freelist page %d in a NoFreelistSync file", m0.freelist)
	case m0.root < 2 || m0.root >= m0.hwm:
		t.Fatalf("root page %d", m0.root)
	}
	hdr := raw[int(m0.root)*ps:]
	if ne.Uint64(hdr) != m0.root || ne.Uint16(hdr[8:]) != leafPage {
		t.Fatalf("root page header %x", hdr[:pageHeaderLen])
	}
}

// Random puts and deletes over many transactions: every state bbolt passes
// through is accepted.
func TestFileAcceptsStatesUnderChurn(t *testing.T) {
	for _, pageSize := range []int{1024, 4096} {
		t.Run(fmt.Sprint("page size ", pageSize), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize, NoFreelistSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(createBuckets); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(uint64(pageSize), 7))
			for round := range 40 {
				err := db.Update(func(tx *bolt.Tx) error {
					for range 300 {
						b := tx.Bucket(testBuckets[rng.IntN(2)])
						k := fmt.Appendf(nil, "%06d", rng.IntN(3000))
						if rng.IntN(3) == 0 {
							if err := b.Delete(k); err != nil {
								return err
							}
						} else if err := b.Put(k, make([]byte, rng.IntN(3*pageSize/2))); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if round%5 != 4 {
					continue
				}
				snap := filepath.Join(t.TempDir(), fmt.Sprint("snap", round))
				if err := db.View(func(tx *bolt.Tx) error { return tx.CopyFile(snap, 0o600) }); err != nil {
					t.Fatal(err)
				}
				accepted(t, snap)
			}
		})
	}
}

// The seeds of FuzzFile: the one bbolt wrote is accepted (its bucket inside
// a bucket only where the options allow it), every damaged one refused.
func TestFileOnSeeds(t *testing.T) {
	for _, s := range seeds(t) {
		t.Run(s.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seed.db")
			if err := os.WriteFile(path, s.file, 0o600); err != nil {
				t.Fatal(err)
			}
			err := checkFile(t, path, Options{})
			if s.valid != (err == nil) {
				t.Fatalf("valid %v, File: %v", s.valid, err)
			}
			t.Logf("File: %v", err)
			if !s.valid {
				return
			}
			if problems, err := boltCheck(path); err != nil || len(problems) > 0 {
				t.Fatalf("bbolt: %v %v", err, problems)
			}
			if err := checkFile(t, path, Options{MaxBucketDepth: 2}); err != nil {
				t.Fatalf("buckets two deep, MaxBucketDepth 2: %v", err)
			}
			if err := checkFile(t, path, flat); err == nil {
				t.Fatal("a bucket inside a bucket accepted with MaxBucketDepth 1")
			}
		})
	}
}
