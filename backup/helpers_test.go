package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

var testHeader = Header{
	ClusterID:       "c-0123456789abcdef",
	Created:         time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC),
	ShardMapVersion: 42,
}

// testPart is a part to write: size bytes of a stream seeded by seed,
// written in chunks of varying sizes.
type testPart struct {
	name string
	meta PartMeta
	size int64
	seed uint64
}

func metaPart(size int64) testPart {
	return testPart{name: MetaPartName, meta: PartMeta{Kind: KindMeta, AppliedIndex: 7, Digest: "d-meta"}, size: size, seed: 1}
}

func groupPart(id uint64, size int64) testPart {
	return testPart{
		name: GroupPartName(id),
		meta: PartMeta{Kind: KindGroup, GroupID: id, AppliedIndex: 100 + id, Digest: "d-" + GroupPartName(id),
			Ranges: []SlotRange{{First: uint32(id * 10), Last: uint32(id*10 + 9)}, {First: 4000 + uint32(id), Last: 4000 + uint32(id)}}},
		size: size,
		seed: id + 2,
	}
}

// chunkSizes: odd sizes around and across the frame size, so writes split
// and join frames.
var chunkSizes = []int{1, 7, 4096, MaxFrame + 3, 300_001, 255, 257}

// stream writes p's bytes to w in varying chunks and returns their SHA-256.
func (p testPart) stream(t testing.TB, w io.Writer) []byte {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{byte(p.seed)})
	h := sha256.New()
	buf := make([]byte, MaxFrame+3)
	for left, i := p.size, 0; left > 0; i++ {
		n := int(min(int64(chunkSizes[i%len(chunkSizes)]), left))
		rng.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			t.Fatalf("write %s: %v", p.name, err)
		}
		left -= int64(n)
	}
	return h.Sum(nil)
}

func (p testPart) sum(t testing.TB) []byte { return p.stream(t, io.Discard) }

// recorder keeps the file in memory and where each Write started: each
// record is one Write, so these are the record boundaries.
type recorder struct {
	bytes.Buffer
	starts []int
}

func (r *recorder) Write(b []byte) (int, error) {
	r.starts = append(r.starts, r.Len())
	return r.Buffer.Write(b)
}

// writeParts writes parts with w, failing the test on any error.
func writeParts(t testing.TB, w *Writer, parts ...testPart) {
	t.Helper()
	for _, p := range parts {
		pw, err := w.Part(p.name, p.meta)
		if err != nil {
			t.Fatalf("part %s: %v", p.name, err)
		}
		p.stream(t, pw)
		if err := pw.Close(); err != nil {
			t.Fatalf("close part %s: %v", p.name, err)
		}
	}
}

// build writes a whole backup in memory with frames of frameSize.
func build(t testing.TB, frameSize int, parts ...testPart) *recorder {
	t.Helper()
	rec := &recorder{}
	w, err := NewWriter(rec, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	w.frameSize = frameSize
	writeParts(t, w, parts...)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// listAbsent is the test hook for a missing part: the manifest lists a
// part whose bytes are never written.
func listAbsent(w *Writer, name string, meta PartMeta) {
	empty := sha256.Sum256(nil)
	w.manifest.Parts = append(w.manifest.Parts, PartInfo{Name: name, PartMeta: meta, Offset: w.Bytes(), SHA256: hex.EncodeToString(empty[:])})
	w.names[name] = true
	w.groups[meta.GroupID] = name
}

// writeUnlisted is the test hook for a part the manifest does not list
// (a second copy if p's name is already listed).
func writeUnlisted(t testing.TB, w *Writer, p testPart) {
	t.Helper()
	names, groups := w.names, w.groups
	w.names, w.groups = map[string]bool{}, map[uint64]string{}
	writeParts(t, w, p)
	w.names, w.groups = names, groups
	w.manifest.Parts = w.manifest.Parts[:len(w.manifest.Parts)-1]
}

// readAll reads a part through, returning its SHA-256.
func readAll(r *Reader, name string) ([]byte, error) {
	pr, err := r.Part(name)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, pr); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
