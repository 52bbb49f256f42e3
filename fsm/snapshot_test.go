package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/boltcheck"
)

// newHarnessPageSize is newHarness on a state file created with the given
// bbolt page size (0: the default), so test snapshots can be small.
func newHarnessPageSize(t *testing.T, pageSize int) *harness {
	t.Helper()
	f, path := openPageSize(t, pageSize)
	return &harness{t: t, f: f, path: path, next: 1}
}

func openPageSize(tb testing.TB, pageSize int) (*FSM, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "state.db")
	if pageSize != 0 {
		db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize, NoFreelistSync: true})
		if err != nil {
			tb.Fatal(err)
		}
		if err := db.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	f, err := Open(Options{Path: path, InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f, path
}

// fillState applies a little of everything a state holds.
func fillState(h *harness, appends int) {
	for i := range appends {
		h.apply(appendCmd(fmt.Sprint("t", i%3), fmt.Sprint("payload ", i), fmt.Sprint("k", i), int64(1000+i)))
	}
	h.apply(&fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{NodeId: "n1", RaftAddr: "r", GrpcAddr: "g"}}})
	h.apply(sendCmd("room", "bob", []string{"alice", "bob"}, "hi", "", 5000, 500))
}

// persisted is what Persist writes for the current state of f.
func persisted(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// rawBolt is the state file of f as a snapshot before format 1 was.
func rawBolt(t testing.TB, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := f.view(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&buf); return err }); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// frameSnapshot wraps body, a state at applied index applied, as Persist
// does.
func frameSnapshot(applied uint64, body []byte) []byte {
	b := binary.BigEndian.AppendUint16([]byte(snapMagic), snapVersion)
	b = binary.BigEndian.AppendUint64(b, applied)
	b = binary.BigEndian.AppendUint64(b, uint64(len(body)))
	b = append(b, body...)
	sum := sha256.Sum256(b)
	b = binary.BigEndian.AppendUint64(b, uint64(len(body)))
	return append(b, sum[:]...)
}

// refusedAndIntact restores in into h and checks it was refused with
// ErrBadSnapshot while the state stayed as it was and usable.
func refusedAndIntact(t *testing.T, h *harness, in []byte) {
	t.Helper()
	before := h.digest()
	applied := h.f.AppliedIndex()
	err := h.f.Restore(io.NopCloser(bytes.NewReader(in)))
	if !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("restore of %d bytes: %v, want an error wrapping ErrBadSnapshot", len(in), err)
	}
	t.Logf("refused: %v", err)
	if h.digest() != before || h.f.AppliedIndex() != applied {
		t.Fatal("a refused restore changed the state")
	}
	if _, err := os.Stat(h.path + ".restore"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	head := len(h.pullAll("probe"))
	if r := h.apply(appendCmd("probe", "x", "", 1<<40))[0]; r == nil || r.Err != nil || r.Append.Seq != uint64(head+1) {
		t.Fatalf("apply after a refused restore: %+v", r)
	}
}

func TestSnapshotRoundTripsFramed(t *testing.T) {
	cases := []struct {
		name     string
		pageSize int
		appends  int
	}{
		{"empty state", 0, 0},
		{"default pages", 0, 200},
		{"1 KiB pages, overflowing values", 1024, 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newHarnessPageSize(t, tc.pageSize)
			fillState(src, tc.appends)
			snap := persisted(t, src.f)

			// The frame: header, the bbolt body, trailer.
			body := snap[snapHeaderLen : len(snap)-snapTrailerLen]
			if !bytes.Equal(snap, frameSnapshot(src.f.AppliedIndex(), body)) || !boltcheck.LooksLikeBolt(body) {
				t.Fatalf("snapshot is not framed as documented (%d bytes, starts %q)", len(snap), snap[:16])
			}

			dst := newHarnessPageSize(t, 0)
			dst.apply(appendCmd("other", "to be replaced", "", 1))
			if err := dst.f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatal(err)
			}
			if src.digest() != dst.digest() || src.f.AppliedIndex() != dst.f.AppliedIndex() {
				t.Fatal("restored state differs from the original")
			}
			if len(dst.pullAll("other")) != 0 {
				t.Fatal("restore merged instead of replacing")
			}
			// The restored state goes on like the original.
			dst.next = src.next
			a, b := src.apply(appendCmd("t0", "next", "", 9999))[0], dst.apply(appendCmd("t0", "next", "", 9999))[0]
			if a.Err != nil || b.Err != nil || a.Append.Seq != b.Append.Seq || src.digest() != dst.digest() {
				t.Fatalf("after one more append: %+v vs %+v", a, b)
			}
		})
	}
}

// Every single-byte change and every truncation of a real snapshot is
// refused by the frame check (before any file is written), and a sample of
// them through the whole Restore leaves the state intact and usable.
func TestRestoreRefusesEveryFlippedByteAndTruncation(t *testing.T) {
	src := newHarnessPageSize(t, 1024)
	fillState(src, 20)
	snap := persisted(t, src.f)
	if _, err := copySnapshot(io.Discard, bytes.NewReader(snap)); err != nil {
		t.Fatalf("the intact snapshot: %v", err)
	}
	mutated := make([]byte, len(snap))
	for i := range snap {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			copy(mutated, snap)
			mutated[i] ^= mask
			if _, err := copySnapshot(io.Discard, bytes.NewReader(mutated)); !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("byte %d ^ %#x: %v, want ErrBadSnapshot", i, mask, err)
			}
		}
	}
	for n := range len(snap) {
		if _, err := copySnapshot(io.Discard, bytes.NewReader(snap[:n])); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("cut at %d: %v, want ErrBadSnapshot", n, err)
		}
	}
	if _, err := copySnapshot(io.Discard, bytes.NewReader(append(bytes.Clone(snap), 0))); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a byte after the trailer: %v", err)
	}

	body := snapHeaderLen
	trailer := len(snap) - snapTrailerLen
	offsets := []struct {
		name string
		at   int
	}{
		{"magic", 0}, {"version", len(snapMagic) + 1}, {"applied index", snapAppliedAt + 1}, {"length", snapHeaderLen - 1},
		{"meta page 0", body + boltPageHeaderLen + 8}, {"meta page 1", body + 1024 + 20},
		{"a tree page", body + 3*1024 + 5}, {"middle", len(snap) / 2}, {"last body byte", trailer - 1},
		{"trailer length", trailer + 3}, {"trailer hash", len(snap) - 1},
	}
	dst := newHarnessPageSize(t, 0)
	fillState(dst, 3)
	for _, o := range offsets {
		t.Run("flip "+o.name, func(t *testing.T) {
			copy(mutated, snap)
			mutated[o.at] ^= 0x20
			refusedAndIntact(t, dst, mutated)
		})
		t.Run("cut at "+o.name, func(t *testing.T) { refusedAndIntact(t, dst, snap[:o.at]) })
	}
}

func TestRestoreRefusesWellFramedWrongFiles(t *testing.T) {
	// boltFile builds a bbolt file with fn and returns its bytes.
	boltFile := func(t *testing.T, fn func(tx *bolt.Tx) error) []byte {
		t.Helper()
		db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, &bolt.Options{PageSize: 1024, NoFreelistSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(fn); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&buf); return err }); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// state builds a syncstore state, then lets fn break it.
	state := func(fn func(tx *bolt.Tx) error) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			return boltFile(t, func(tx *bolt.Tx) error {
				if err := createSchema(tx); err != nil {
					return err
				}
				return fn(tx)
			})
		}
	}
	src := newHarnessPageSize(t, 1024)
	fillState(src, 5)
	good := persisted(t, src.f)
	goodBody := good[snapHeaderLen : len(good)-snapTrailerLen]

	cases := []struct {
		name     string
		body     func(t *testing.T) []byte
		unframed bool // sent as is, not framed
	}{
		{name: "empty stream", body: func(*testing.T) []byte { return nil }, unframed: true},
		{name: "unframed text", body: func(*testing.T) []byte { return []byte("not a database") }, unframed: true},
		{name: "checksummed garbage", body: func(*testing.T) []byte { return bytes.Repeat([]byte("garbage!"), 1000) }},
		{name: "checksummed nothing", body: func(*testing.T) []byte { return nil }},
		{name: "bbolt file without our buckets", body: func(t *testing.T) []byte {
			return boltFile(t, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
		}},
		{name: "newer schema", body: state(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(schemaVersion+1)) })},
		{name: "schema version of 4 bytes", body: state(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte{0, 0, 0, 2}) })},
		{name: "applied index of 3 bytes", body: state(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyAppliedIndex, []byte{1, 2, 3}) })},
		{name: "a bucket inside a bucket", body: state(func(tx *bolt.Tx) error {
			_, err := tx.Bucket(bucketTimelines).CreateBucket([]byte("nested"))
			return err
		})},
		{name: "applied index is a bucket", body: state(func(tx *bolt.Tx) error {
			_, err := tx.Bucket(bucketMeta).CreateBucket(keyAppliedIndex)
			return err
		})},
		{name: "unframed bbolt with a damaged meta page", unframed: true, body: func(*testing.T) []byte {
			b := bytes.Clone(goodBody)
			b[boltPageHeaderLen+20] ^= 1 // the root page id, under the meta checksum
			return b
		}},
		{name: "unframed bbolt with a page naming another", unframed: true, body: func(*testing.T) []byte {
			b := bytes.Clone(goodBody)
			for p := 2; p*1024 < len(b); p++ { // every tree page says it is page 2
				binary.NativeEndian.PutUint64(b[p*1024:], 2)
			}
			return b
		}},
		{name: "unframed bbolt cut short", unframed: true, body: func(*testing.T) []byte { return goodBody[:len(goodBody)-1024] }},
	}
	// Trees that tx.Check accepts but bbolt's writes would corrupt (found
	// by mutating real files: a state machine that then appended panicked
	// with "circular dependency" once bbolt reused a page still linked).
	deep := newHarnessPageSize(t, 1024)
	fillState(deep, 150)
	deepBody := rawBolt(t, deep.f)
	tl := bucketValueOffset(t, deepBody, bucketTimelines)
	tlRoot := binary.NativeEndian.Uint64(deepBody[tl:])
	if tlRoot == 0 || binary.NativeEndian.Uint16(deepBody[tlRoot*1024+8:]) != boltBranchPage {
		t.Fatalf("timelines bucket root %d is not a branch page", tlRoot)
	}
	child := binary.NativeEndian.Uint64(deepBody[tlRoot*1024+boltPageHeaderLen+8:]) // element 0's page
	cases = append(cases, []struct {
		name     string
		body     func(t *testing.T) []byte
		unframed bool
	}{
		{name: "an empty page below a branch", body: func(*testing.T) []byte {
			b := bytes.Clone(deepBody)
			binary.NativeEndian.PutUint16(b[child*1024+10:], 0)
			return b
		}},
		{name: "a branch key that is not its child's first key", body: func(*testing.T) []byte {
			b := bytes.Clone(deepBody)
			// Element 0's key loses its last byte: a prefix, so still in
			// order, as tx.Check would accept.
			e := tlRoot*1024 + boltPageHeaderLen
			binary.NativeEndian.PutUint32(b[e+4:], binary.NativeEndian.Uint32(b[e+4:])-1)
			return b
		}},
		{name: "an inline bucket page with a page id", body: func(*testing.T) []byte {
			b := bytes.Clone(deepBody)
			off := bucketValueOffset(t, b, bucketOutbox)
			if binary.NativeEndian.Uint64(b[off:]) != 0 {
				t.Fatal("outbox bucket is not inline")
			}
			binary.NativeEndian.PutUint64(b[off+boltBucketLen:], child)
			return b
		}},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.body(t)
			if !tc.unframed {
				in = frameSnapshot(1, in)
			}
			h := newHarnessPageSize(t, 0)
			fillState(h, 2)
			refusedAndIntact(t, h, in)
		})
	}
	t.Run("unknown format version", func(t *testing.T) {
		in := bytes.Clone(good)
		binary.BigEndian.PutUint16(in[len(snapMagic):], snapVersion+1)
		h := newHarnessPageSize(t, 0)
		refusedAndIntact(t, h, in)
	})
}

// A snapshot from a syncd before format 1 (the raw bbolt file) restores.
func TestRestoreAcceptsUnframedSnapshots(t *testing.T) {
	for _, pageSize := range []int{0, 1024} {
		t.Run(fmt.Sprint("page size ", pageSize), func(t *testing.T) {
			src := newHarnessPageSize(t, pageSize)
			fillState(src, 50)
			dst := newHarnessPageSize(t, 0)
			if err := dst.f.Restore(io.NopCloser(bytes.NewReader(rawBolt(t, src.f)))); err != nil {
				t.Fatal(err)
			}
			if src.digest() != dst.digest() || src.f.AppliedIndex() != dst.f.AppliedIndex() {
				t.Fatal("restored state differs from the original")
			}
		})
	}
}

// What the tests here damage in a bbolt v1.4 file (boltcheck has the
// format): a page starts with a 16-byte header (id u64, flags u16, count
// u16, overflow u32), then 16-byte elements; a bucket value starts with a
// 16-byte header (root page u64, sequence u64); meta page 0 holds the page
// size (u32) at offset 24 and the root bucket's page (u64) at 32.
const (
	boltPageHeaderLen = 16
	boltElementLen    = 16
	boltBucketLen     = 16
	boltBranchPage    = 0x01
	boltLeafPage      = 0x02
)

// bucketValueOffset finds a top-level bucket in a bbolt file whose root
// page is a leaf and returns the offset of its value (the bucket header).
func bucketValueOffset(t *testing.T, b []byte, name []byte) uint64 {
	t.Helper()
	page := binary.NativeEndian.Uint64(b[32:]) * uint64(binary.NativeEndian.Uint32(b[24:]))
	if binary.NativeEndian.Uint16(b[page+8:]) != boltLeafPage {
		t.Fatal("root bucket page is not a leaf")
	}
	for i := range uint64(binary.NativeEndian.Uint16(b[page+10:])) {
		e := page + boltPageHeaderLen + i*boltElementLen // leaf: flags, pos, ksize, vsize u32
		k := e + uint64(binary.NativeEndian.Uint32(b[e+4:]))
		ksize := uint64(binary.NativeEndian.Uint32(b[e+8:]))
		if bytes.Equal(b[k:k+ksize], name) {
			return k + ksize
		}
	}
	t.Fatalf("no bucket %s", name)
	return 0
}

// RestoreIfNewer restores a framed snapshot only when its state is ahead
// of the current one, and an unframed one always.
func TestRestoreIfNewer(t *testing.T) {
	src := newHarnessPageSize(t, 0)
	fillState(src, 20)
	snap := persisted(t, src.f)
	raw := rawBolt(t, src.f)
	cases := []struct {
		name         string
		stateApplies int
		in           []byte
		want         bool
	}{
		{"a state behind the snapshot", 5, snap, true},
		{"a state as far as the snapshot", 20, snap, false},
		{"a state ahead of the snapshot", 25, snap, false},
		{"an unframed snapshot says nothing: restored", 25, raw, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := newHarnessPageSize(t, 0)
			fillState(dst, tc.stateApplies)
			before := dst.digest()
			restored, err := dst.f.RestoreIfNewer(io.NopCloser(bytes.NewReader(tc.in)))
			if err != nil || restored != tc.want {
				t.Fatalf("restored %v, %v; want %v", restored, err, tc.want)
			}
			switch got := dst.digest(); {
			case tc.want && got != src.digest():
				t.Fatal("restored, but not to the snapshot's state")
			case !tc.want && got != before:
				t.Fatal("skipped, but the state changed")
			}
		})
	}
}
