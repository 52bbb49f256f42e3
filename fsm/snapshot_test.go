package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

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

// frame builds a well-framed stream (header, the records records writes,
// trailer with the right count and checksum) around arbitrary content.
func frame(version uint16, applied uint64, records func(sw *snapWriter)) []byte {
	var buf bytes.Buffer
	sw := &snapWriter{w: &buf, h: sha256.New()}
	header := binary.BigEndian.AppendUint16([]byte(snapMagic), version)
	sw.write(binary.BigEndian.AppendUint64(header, applied))
	records(sw)
	sw.write(binary.BigEndian.AppendUint64([]byte{recTrailer}, sw.count))
	buf.Write(sw.h.Sum(nil))
	return buf.Bytes()
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
	head := len(h.pullAll("probe"))
	if r := h.apply(appendCmd("probe", "x", "", 1<<40))[0]; r == nil || r.Err != nil || r.Append.Seq != uint64(head+1) {
		t.Fatalf("apply after a refused restore: %+v", r)
	}
}

func TestSnapshotRoundTrips(t *testing.T) {
	cases := []struct {
		name    string
		appends int
		payload int
	}{
		{"empty state", 0, 0},
		{"small values", 200, 0},
		{"values over a page", 40, 9000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newHarness(t)
			fillState(src, tc.appends)
			for i := range tc.appends {
				if tc.payload > 0 {
					src.apply(appendCmd("big", strings.Repeat(fmt.Sprint(i%10), tc.payload), "", 1))
				}
			}
			snap := persisted(t, src.f)
			if !bytes.HasPrefix(snap, binary.BigEndian.AppendUint16([]byte(snapMagic), snapVersion)) ||
				binary.BigEndian.Uint64(snap[snapAppliedAt:]) != src.f.AppliedIndex() {
				t.Fatalf("header is not as documented: %q", snap[:snapHeaderLen])
			}

			dst := newHarness(t)
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
			// The restored state goes on like the original, and survives a
			// reopen.
			dst.next = src.next
			a, b := src.apply(appendCmd("t0", "next", "", 9999))[0], dst.apply(appendCmd("t0", "next", "", 9999))[0]
			if a.Err != nil || b.Err != nil || a.Append.Seq != b.Append.Seq || src.digest() != dst.digest() {
				t.Fatalf("after one more append: %+v vs %+v", a, b)
			}
			dst.reopen()
			if src.digest() != dst.digest() {
				t.Fatal("the restored state changed across a reopen")
			}
		})
	}
}

// A snapshot bigger than one restore transaction restores in parts and
// only becomes visible whole.
func TestRestoreInParts(t *testing.T) {
	src := newHarness(t)
	payload := strings.Repeat("p", 60<<10)
	for i := range (2*restoreChunkBytes)/len(payload) + 10 {
		src.apply(appendCmd(fmt.Sprint("t", i%7), payload, "", int64(i)))
	}
	snap := persisted(t, src.f)
	if len(snap) < 2*restoreChunkBytes {
		t.Fatalf("snapshot of %d bytes does not span parts", len(snap))
	}
	dst := newHarness(t)
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if src.digest() != dst.digest() {
		t.Fatal("restored state differs from the original")
	}
	// Cut in the last part: the parts already loaded never show.
	dst.next = src.next
	fillState(dst, 1)
	refusedAndIntact(t, dst, snap[:len(snap)-100])
}

// Every single-byte change and every truncation of a real snapshot is
// refused, and the state stays as it was.
func TestRestoreRefusesEveryFlippedByteAndTruncation(t *testing.T) {
	src := newHarness(t)
	fillState(src, 4)
	snap := persisted(t, src.f)
	dst := newHarness(t)
	fillState(dst, 2)
	before := dst.digest()
	mutated := make([]byte, len(snap))
	for i := range snap {
		for _, mask := range []byte{0x01, 0x80} {
			copy(mutated, snap)
			mutated[i] ^= mask
			if err := dst.f.Restore(io.NopCloser(bytes.NewReader(mutated))); !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("byte %d ^ %#x: %v, want ErrBadSnapshot", i, mask, err)
			}
		}
	}
	for n := range len(snap) {
		if err := dst.f.Restore(io.NopCloser(bytes.NewReader(snap[:n]))); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("cut at %d: %v, want ErrBadSnapshot", n, err)
		}
	}
	if dst.digest() != before {
		t.Fatal("refused restores changed the state")
	}
	refusedAndIntact(t, dst, append(bytes.Clone(snap), 0))
	for _, at := range []int{0, len(snapMagic), snapAppliedAt + 7, snapHeaderLen + 3, len(snap) / 2, len(snap) - 1} {
		copy(mutated, snap)
		mutated[at] ^= 0x20
		refusedAndIntact(t, dst, mutated)
	}
}

// Streams with a valid frame and checksum around content that is not a
// state this binary can use.
func TestRestoreRefusesWellFramedWrongStates(t *testing.T) {
	// broken persists a real state after fn edited it.
	broken := func(fn func(root *bolt.Bucket) error) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			h := newHarness(t)
			fillState(h, 3)
			if err := h.f.update(fn); err != nil {
				t.Fatal(err)
			}
			return persisted(t, h.f)
		}
	}
	raw := func(version uint16, records func(sw *snapWriter)) func(t *testing.T) []byte {
		return func(*testing.T) []byte { return frame(version, 1, records) }
	}
	cases := []struct {
		name string
		in   func(t *testing.T) []byte
	}{
		{"empty stream", func(*testing.T) []byte { return nil }},
		{"text", func(*testing.T) []byte { return []byte("not a snapshot at all") }},
		{"format 1 (layout 1)", raw(1, func(*snapWriter) {})},
		{"unknown format version", raw(snapVersion+1, func(*snapWriter) {})},
		{"no buckets", raw(snapVersion, func(*snapWriter) {})},
		{"a pair outside any bucket", raw(snapVersion, func(sw *snapWriter) { sw.record(recPair, []byte("k"), []byte("v")) })},
		{"an empty key", raw(snapVersion, func(sw *snapWriter) {
			sw.record(recBucket, bucketMeta)
			sw.record(recPair, nil, []byte("v"))
		})},
		{"an empty bucket name", raw(snapVersion, func(sw *snapWriter) { sw.record(recBucket, nil) })},
		{"an unknown record kind", raw(snapVersion, func(sw *snapWriter) { sw.record('q') })},
		{"a value over the limit", raw(snapVersion, func(sw *snapWriter) {
			sw.record(recBucket, bucketMeta)
			sw.record(recPair, []byte("k"), make([]byte, maxSnapshotValue+1))
		})},
		{"newer schema", broken(func(root *bolt.Bucket) error { return root.Bucket(bucketMeta).Put(keySchema, u64(schemaVersion+1)) })},
		{"schema of layout 1", broken(func(root *bolt.Bucket) error { return root.Bucket(bucketMeta).Put(keySchema, u64(3)) })},
		{"schema version of 4 bytes", broken(func(root *bolt.Bucket) error { return root.Bucket(bucketMeta).Put(keySchema, []byte{0, 0, 0, 4}) })},
		{"applied term of 3 bytes", broken(func(root *bolt.Bucket) error { return root.Bucket(bucketMeta).Put(keyAppliedTerm, []byte{1, 2, 3}) })},
		{"a data bucket missing", broken(func(root *bolt.Bucket) error { return root.DeleteBucket(bucketOutbox) })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in(t)
			h := newHarness(t)
			fillState(h, 2)
			refusedAndIntact(t, h, in)
		})
	}
	t.Run("persist refuses a bucket inside a bucket", func(t *testing.T) {
		h := newHarness(t)
		err := h.f.update(func(root *bolt.Bucket) error {
			_, err := root.Bucket(bucketTimelines).CreateBucket([]byte("nested"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		snap, err := h.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Release()
		var sink memSink
		if err := snap.Persist(&sink); err == nil || !sink.cancelled {
			t.Fatalf("persist of a state with a nested bucket: %v, cancelled %v", err, sink.cancelled)
		}
	})
	t.Run("header names another applied index than the state", func(t *testing.T) {
		h := newHarness(t)
		fillState(h, 3)
		snap := persisted(t, h.f)
		binary.BigEndian.PutUint64(snap[snapAppliedAt:], h.f.AppliedIndex()+5)
		sum := sha256.Sum256(snap[:len(snap)-sha256.Size])
		copy(snap[len(snap)-sha256.Size:], sum[:])
		refusedAndIntact(t, newHarness(t), snap)
	})
}

// RestoreIfNewer restores a snapshot only when its state is ahead of the
// current one.
func TestRestoreIfNewer(t *testing.T) {
	src := newHarness(t)
	fillState(src, 20)
	snap := persisted(t, src.f)
	cases := []struct {
		name         string
		stateApplies int
		want         bool
	}{
		{"a state behind the snapshot", 5, true},
		{"a state as far as the snapshot", 20, false},
		{"a state ahead of the snapshot", 25, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := newHarness(t)
			fillState(dst, tc.stateApplies)
			before := dst.digest()
			restored, err := dst.f.RestoreIfNewer(io.NopCloser(bytes.NewReader(snap)))
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
