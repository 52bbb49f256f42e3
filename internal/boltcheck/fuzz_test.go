package boltcheck

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

type seed struct {
	name  string
	file  []byte
	valid bool // File accepts it, nesting unlimited
}

// seeds are small bbolt files (1 KiB pages, six of them): one as bbolt
// writes it, with two inline buckets, one holding a bucket, and damaged
// copies of it.
func seeds(tb testing.TB) []seed {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(tb.TempDir(), "seed.db"), 0o600, &bolt.Options{PageSize: 1024, NoFreelistSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		alpha, err := tx.CreateBucket([]byte("alpha"))
		if err != nil {
			return err
		}
		for i := range 3 {
			if err := alpha.Put(fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "value %d", i)); err != nil {
				return err
			}
		}
		beta, err := tx.CreateBucket([]byte("beta"))
		if err != nil {
			return err
		}
		nested, err := beta.CreateBucket([]byte("nested"))
		if err != nil {
			return err
		}
		return nested.Put([]byte("k"), []byte("v"))
	})
	var buf bytes.Buffer
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&buf); return err })
	}
	if err != nil {
		tb.Fatal(err)
	}
	good := buf.Bytes()
	m, err := parseMeta(good, 0)
	if err != nil {
		tb.Fatal(err)
	}
	root := m.root * m.pageSize
	// The root page is a leaf of bucket elements; alpha's value (bucket
	// header, then its inline page) follows its key.
	alpha := root + uint64(bytes.Index(good[root:root+m.pageSize], []byte("alpha"))) + 5
	if ne.Uint16(good[root+8:]) != leafPage || ne.Uint64(good[alpha:]) != 0 {
		tb.Fatal("seed: root page not a leaf, or alpha not inline")
	}
	damaged := func(fn func(b []byte)) []byte {
		b := bytes.Clone(good)
		fn(b)
		return b
	}
	return []seed{
		{"valid-1k", good, true},
		{"meta-checksum-1k", damaged(func(b []byte) { b[pageHeaderLen+16] ^= 1 }), false}, // the root page id
		{"root-names-another-1k", damaged(func(b []byte) { ne.PutUint64(b[root:], 2) }), false},
		{"value-in-root-1k", damaged(func(b []byte) { ne.PutUint32(b[root+pageHeaderLen:], 0) }), false},
		{"inline-page-id-1k", damaged(func(b []byte) { ne.PutUint64(b[alpha+bucketLen:], 3) }), false},
		{"cut-short-1k", good[:len(good)-int(m.pageSize)], false},
		{"header-only", good[:HeaderLen], false},
		{"not-bolt", []byte("not a bbolt file"), false},
	}
}

// FuzzFile runs File on arbitrary bytes. It must never panic, and what it
// accepts bbolt must open, check and read without panicking (tx.Check may
// still report what File leaves to it). MaxBucketDepth only ever refuses
// more.
func FuzzFile(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s.file)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "f.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		errAny, errFlat := checkFile(t, path, Options{}), checkFile(t, path, flat)
		if errAny != nil && errFlat == nil {
			t.Fatalf("refused with no limit (%v), accepted with MaxBucketDepth 1", errAny)
		}
		if errAny != nil {
			return
		}
		_, _ = boltCheck(path) // bbolt may refuse it or report problems; it must not panic
	})
}

// TestWriteFileSeeds rewrites the committed seed corpus of FuzzFile
// (SYNCSTORE_WRITE_SEEDS=1 go test ./internal/boltcheck -run
// TestWriteFileSeeds), after a bbolt upgrade.
func TestWriteFileSeeds(t *testing.T) {
	if os.Getenv("SYNCSTORE_WRITE_SEEDS") == "" {
		t.Skip("set SYNCSTORE_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzFile")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzFile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds(t) {
		if err := os.WriteFile(filepath.Join(dir, s.name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s.file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
