package backup

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/shard"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		frameSize int
		parts     []testPart
	}{
		{"no parts", MaxFrame, nil},
		{"meta, empty, several MiB, exactly one frame", MaxFrame, []testPart{
			metaPart(10_000), groupPart(1, 0), groupPart(2, 5<<20+17), groupPart(3, MaxFrame),
		}},
		{"small frames", 100, []testPart{groupPart(5, 1), metaPart(1000), groupPart(9, 99), groupPart(4, 100), groupPart(6, 0)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.ssb")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			w, err := NewWriter(f, testHeader)
			if err != nil {
				t.Fatal(err)
			}
			w.frameSize = tc.frameSize
			writeParts(t, w, tc.parts...)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			st, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if w.Bytes() != st.Size() {
				t.Errorf("Bytes() = %d, file has %d", w.Bytes(), st.Size())
			}

			m, err := Verify(path)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if m.FormatVersion != FormatVersion || m.ClusterID != testHeader.ClusterID ||
				!m.Created.Equal(testHeader.Created) || m.ShardMapVersion != testHeader.ShardMapVersion {
				t.Errorf("manifest header = %+v, want %+v", m, testHeader)
			}
			if len(m.Parts) != len(tc.parts) {
				t.Fatalf("manifest lists %d parts, want %d", len(m.Parts), len(tc.parts))
			}
			r, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for i, p := range tc.parts {
				got := m.Parts[i]
				want := p.sum(t)
				if got.Name != p.name || got.Kind != p.meta.Kind || got.GroupID != p.meta.GroupID ||
					got.AppliedIndex != p.meta.AppliedIndex || got.Digest != p.meta.Digest ||
					!slices.Equal(got.Ranges, p.meta.Ranges) || got.Length != p.size || got.SHA256 != hex.EncodeToString(want) {
					t.Errorf("manifest part %d = %+v, want %s %+v of %d bytes", i, got, p.name, p.meta, p.size)
				}
				sum, err := readAll(r, p.name)
				if err != nil {
					t.Fatalf("read %s: %v", p.name, err)
				}
				if !bytes.Equal(sum, want) {
					t.Errorf("part %s read back other bytes", p.name)
				}
			}
		})
	}
}

// countingWriter discards what it is given, keeping the count and the
// largest single write.
type countingWriter struct{ n, largest int64 }

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	c.largest = max(c.largest, int64(len(b)))
	return len(b), nil
}

// The writer streams: while a part is being written, all but at most one
// frame of it has reached the file, in writes no larger than a frame, and
// writing or reading a part many frames long allocates far less than the
// part.
func TestBoundedMemory(t *testing.T) {
	const size = 16 << 20
	cw := &countingWriter{}
	w, err := NewWriter(cw, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := w.Part(GroupPartName(1), groupPart(1, 0).meta)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xa5}, 300_001)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for written := 0; written < size; written += len(chunk) {
		if _, err := pw.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if lag := int64(written+len(chunk)) - cw.n; lag > MaxFrame {
			t.Fatalf("after %d bytes the file has %d: the writer holds %d bytes", written+len(chunk), cw.n, lag)
		}
	}
	runtime.ReadMemStats(&ms1)
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 4<<20 {
		t.Errorf("writing %d bytes allocated %d", size, alloc)
	}
	if cw.largest > MaxFrame+dataHeaderLen+crcLen {
		t.Errorf("largest write %d bytes, above a frame", cw.largest)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "big.ssb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err = NewWriter(f, testHeader)
	if err == nil {
		writeParts(t, w, groupPart(1, size))
		err = w.Close()
	}
	if err != nil || f.Close() != nil {
		t.Fatal(err)
	}
	r, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	runtime.ReadMemStats(&ms0)
	pr, err := r.Part(GroupPartName(1))
	if err == nil {
		_, err = io.CopyBuffer(io.Discard, pr, make([]byte, 32<<10))
	}
	runtime.ReadMemStats(&ms1)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 4<<20 {
		t.Errorf("reading %d bytes allocated %d", size, alloc)
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.after < len(b) {
		n := max(f.after, 0)
		f.after = 0
		return n, errors.New("disk full")
	}
	f.after -= len(b)
	return len(b), nil
}

func TestWriterRefuses(t *testing.T) {
	g1 := groupPart(1, 10)
	tests := []struct {
		name string
		// do gets a writer that already holds part g1 and returns the
		// call's error.
		do      func(w *Writer) error
		want    error  // a sentinel, if one applies
		wantMsg string // in the error
		// usable: the refused call changed nothing, and another part and
		// Close still work.
		usable bool
	}{
		{"duplicate name", func(w *Writer) error { _, err := w.Part(g1.name, groupPart(2, 0).meta); return err },
			ErrDuplicatePart, `part "group-1": duplicate part`, true},
		{"duplicate group id", func(w *Writer) error { _, err := w.Part("other", g1.meta); return err },
			ErrDuplicatePart, "group 1 already in part", true},
		{"empty name", func(w *Writer) error { _, err := w.Part("", groupPart(2, 0).meta); return err }, nil, "part name", true},
		{"long name", func(w *Writer) error { _, err := w.Part(strings.Repeat("x", 256), groupPart(2, 0).meta); return err }, nil, "part name", true},
		{"unknown kind", func(w *Writer) error { _, err := w.Part("x", PartMeta{Kind: "log", GroupID: 2}); return err }, nil, `kind "log"`, true},
		{"meta with a group id", func(w *Writer) error { _, err := w.Part("x", PartMeta{Kind: KindMeta, GroupID: 2}); return err }, nil, "kind meta with group id 2", true},
		{"group with id 0", func(w *Writer) error { _, err := w.Part("x", PartMeta{Kind: KindGroup}); return err }, nil, "meta group's id", true},
		{"slot out of range", func(w *Writer) error {
			_, err := w.Part("x", PartMeta{Kind: KindGroup, GroupID: 2, Ranges: []SlotRange{{First: 10, Last: 4096}}})
			return err
		}, nil, "slot range 10..4096", true},
		{"reversed range", func(w *Writer) error {
			_, err := w.Part("x", PartMeta{Kind: KindGroup, GroupID: 2, Ranges: []SlotRange{{First: 10, Last: 9}}})
			return err
		}, nil, "slot range 10..9", true},
		{"part while one is open", func(w *Writer) error {
			if _, err := w.Part("a", groupPart(2, 0).meta); err != nil {
				return nil
			}
			_, err := w.Part("b", groupPart(3, 0).meta)
			return err
		}, nil, `part "a" still open`, false},
		{"close with a part open", func(w *Writer) error {
			if _, err := w.Part("a", groupPart(2, 0).meta); err != nil {
				return nil
			}
			return w.Close()
		}, nil, `part "a" still open`, false},
		{"write after the part's close", func(w *Writer) error {
			pw, err := w.Part("a", groupPart(2, 0).meta)
			if err != nil || pw.Close() != nil {
				return nil
			}
			_, err = pw.Write([]byte("late"))
			return err
		}, nil, "write after close", false},
		{"part after close", func(w *Writer) error {
			if w.Close() != nil {
				return nil
			}
			_, err := w.Part("a", groupPart(2, 0).meta)
			return err
		}, nil, "writer closed", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			w, err := NewWriter(rec, testHeader)
			if err != nil {
				t.Fatal(err)
			}
			writeParts(t, w, g1)
			err = tc.do(w)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.wantMsg)
			}
			if !tc.usable {
				return
			}
			writeParts(t, w, groupPart(7, 3))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := Open(bytes.NewReader(rec.Bytes()), int64(rec.Len()))
			if err == nil {
				err = r.Verify()
			}
			if err != nil {
				t.Fatalf("after a refused call the backup does not verify: %v", err)
			}
			var names []string
			for _, p := range r.Manifest().Parts {
				names = append(names, p.Name)
			}
			if !slices.Equal(names, []string{"group-1", "group-7"}) {
				t.Errorf("manifest lists %v", names)
			}
		})
	}
}

// A failed write poisons the writer: no later part or Close succeeds, so
// a backup cut short can never end with a trailer.
func TestWriteFailureIsSticky(t *testing.T) {
	for _, after := range []int{0, 5, headerLen, headerLen + 3, headerLen + 20, headerLen + 200} {
		fw := &failWriter{after: after}
		w, err := NewWriter(fw, testHeader)
		if err != nil {
			if after >= headerLen {
				t.Errorf("fail after %d: NewWriter: %v", after, err)
			}
			continue
		}
		failed := false
		for _, p := range []testPart{groupPart(1, 100), groupPart(2, 300)} {
			pw, err := w.Part(p.name, p.meta)
			if err != nil {
				failed = true
				continue
			}
			if _, err := pw.Write(make([]byte, p.size)); err != nil {
				failed = true
			}
			if err := pw.Close(); err != nil {
				failed = true
			}
		}
		if err := w.Close(); err == nil || !failed && !strings.Contains(err.Error(), "disk full") {
			t.Errorf("fail after %d: Close = %v after a failed write", after, err)
		}
	}
	if _, err := NewWriter(io.Discard, Header{}); err == nil {
		t.Error("NewWriter took an empty cluster id")
	}
}

// The hooks build files whose manifest and parts disagree; each is refused
// naming the part, while the other parts still read.
func TestPartsMatchManifest(t *testing.T) {
	tests := []struct {
		name  string
		write func(t *testing.T, w *Writer)
		part  string
		want  error
	}{
		{"missing first", func(t *testing.T, w *Writer) {
			listAbsent(w, MetaPartName, metaPart(0).meta)
			writeParts(t, w, groupPart(1, 10), groupPart(2, 20))
		}, MetaPartName, ErrMissingPart},
		{"missing middle", func(t *testing.T, w *Writer) {
			writeParts(t, w, metaPart(10))
			listAbsent(w, "group-3", groupPart(3, 0).meta)
			writeParts(t, w, groupPart(2, 20))
		}, "group-3", ErrMissingPart},
		{"missing last", func(t *testing.T, w *Writer) {
			writeParts(t, w, metaPart(10), groupPart(2, 20))
			listAbsent(w, "group-3", groupPart(3, 0).meta)
		}, "group-3", ErrMissingPart},
		{"unlisted", func(t *testing.T, w *Writer) {
			writeParts(t, w, metaPart(10))
			writeUnlisted(t, w, groupPart(4, 30))
			writeParts(t, w, groupPart(2, 20))
		}, "group-4", ErrUnknownPart},
		{"twice", func(t *testing.T, w *Writer) {
			writeParts(t, w, metaPart(10), groupPart(2, 20))
			writeUnlisted(t, w, groupPart(2, 20))
		}, "group-2", ErrDuplicatePart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.ssb")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			w, err := NewWriter(f, testHeader)
			if err != nil {
				t.Fatal(err)
			}
			tc.write(t, w)
			if err := w.Close(); err != nil || f.Close() != nil {
				t.Fatal(err)
			}
			m, err := Verify(path)
			var pe *PartError
			if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Part != tc.part {
				t.Fatalf("Verify = %v, want %v naming %q", err, tc.want, tc.part)
			}
			if _, ok := m.Part(tc.part); !ok && tc.want == ErrMissingPart {
				t.Errorf("Verify's manifest %+v does not list the missing part", m)
			}
			if want := `backup: part "` + tc.part + `"`; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			r, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for _, p := range r.Manifest().Parts {
				_, err := readAll(r, p.Name)
				if p.Name == tc.part && tc.want == ErrMissingPart {
					if !errors.Is(err, ErrMissingPart) || !errors.As(err, &pe) || pe.Part != p.Name {
						t.Errorf("Part(%s) = %v, want missing", p.Name, err)
					}
				} else if err != nil {
					t.Errorf("Part(%s) = %v, want its bytes", p.Name, err)
				}
			}
		})
	}
}

func TestUnknownFormat(t *testing.T) {
	valid := build(t, MaxFrame, metaPart(10)).Bytes()
	tests := []struct {
		name string
		file func() []byte
		msg  string
	}{
		{"not a backup", func() []byte { return append([]byte("SSSNAP\x00\x02"), valid[8:]...) }, "not a syncstore backup"},
		{"header version 2", func() []byte {
			b := slices.Clone(valid)
			b[headerLen-1] = 2
			return b
		}, "header: unknown format: format version 2"},
		{"header version 0", func() []byte {
			b := slices.Clone(valid)
			b[headerLen-1] = 0
			return b
		}, "format version 0"},
		{"manifest version 2", func() []byte {
			rec := &recorder{}
			w, err := NewWriter(rec, testHeader)
			if err != nil {
				t.Fatal(err)
			}
			w.manifest.FormatVersion = 2
			writeParts(t, w, metaPart(10))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			return rec.Bytes()
		}, "manifest: unknown format: format version 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.file()
			_, err := Open(bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Open = %v, want unknown format with %q", err, tc.msg)
			}
		})
	}
}

func TestRanges(t *testing.T) {
	in := []shard.Range{{Start: 0, End: 1}, {Start: 5, End: 5}, {Start: 10, End: shard.SlotCount}}
	got := RangesOf(in)
	want := []SlotRange{{0, 0}, {10, 4095}}
	if !slices.Equal(got, want) {
		t.Fatalf("RangesOf = %v, want %v (empty ranges dropped)", got, want)
	}
	if got[0].Shard() != in[0] || got[1].Shard() != in[2] {
		t.Errorf("Shard() = %v %v, want %v %v", got[0].Shard(), got[1].Shard(), in[0], in[2])
	}
}

// eofReaderAt returns io.EOF with a read that reaches the end, as
// io.ReaderAt allows.
type eofReaderAt struct{ *bytes.Reader }

func (r eofReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.Reader.ReadAt(b, off)
	if err == nil && off+int64(n) == r.Size() {
		err = io.EOF
	}
	return n, err
}

func TestReaderAtEOFAtEnd(t *testing.T) {
	file := build(t, MaxFrame, metaPart(10), groupPart(1, 0)).Bytes()
	r, err := Open(eofReaderAt{bytes.NewReader(file)}, int64(len(file)))
	if err == nil {
		err = r.Verify()
	}
	if err != nil {
		t.Fatal(err)
	}
}
