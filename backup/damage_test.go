package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// damageFile is a small backup with many frames (of 64 bytes), an empty
// part and a part one byte over a frame, and the offsets where each of its
// records starts.
func damageFile(t *testing.T) (file []byte, starts []int) {
	rec := build(t, 64, metaPart(150), groupPart(1, 0), groupPart(2, 200), groupPart(3, 65))
	return rec.Bytes(), rec.starts
}

// offsetSets are the offsets each damage test tries, by name.
func offsetSets(size int, starts []int) []struct {
	name    string
	offsets []int
} {
	var inside, before []int
	for i, s := range starts {
		end := size
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		inside = append(inside, s+1, s+(end-s)/2)
		before = append(before, end-1)
	}
	every := make([]int, size)
	for i := range every {
		every[i] = i
	}
	return []struct {
		name    string
		offsets []int
	}{
		{"every record boundary", starts},
		{"inside every record", inside},
		{"last byte of every record", before},
		{"every offset", every},
	}
}

// region says what of the file holds offset i: "header", a part's name,
// "manifest" or "trailer".
func region(t *testing.T, file []byte) func(i int) string {
	r, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	parts := r.Manifest().Parts
	trailer := len(file) - trailerLen
	manifest := trailer - int(binary.BigEndian.Uint64(file[trailer:]))
	return func(i int) string {
		switch {
		case i < headerLen:
			return "header"
		case i >= trailer:
			return "trailer"
		case i >= manifest:
			return "manifest"
		}
		name := ""
		for _, p := range parts {
			if int64(i) >= p.Offset {
				name = p.Name
			}
		}
		return name
	}
}

func TestTruncatedRefused(t *testing.T) {
	file, starts := damageFile(t)
	for _, set := range offsetSets(len(file), starts) {
		t.Run(set.name, func(t *testing.T) {
			for _, n := range set.offsets {
				_, err := Open(bytes.NewReader(file[:n]), int64(n))
				if !errors.Is(err, ErrTruncated) {
					t.Errorf("cut at %d of %d: Open = %v, want truncated", n, len(file), err)
				}
			}
		})
	}
	// Through a file too, as syncctl opens it.
	dir := t.TempDir()
	for _, n := range starts {
		path := filepath.Join(dir, fmt.Sprint(n))
		if err := os.WriteFile(path, file[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(path); !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d: Verify = %v, want truncated", n, err)
		}
	}
}

// A flipped byte anywhere is refused: in a part, by an error naming that
// part (from Verify and from reading the part), while every other part
// still reads; in the header as an unknown format; in the manifest or the
// trailer without naming a part.
func TestFlippedByteRefused(t *testing.T) {
	file, starts := damageFile(t)
	where := region(t, file)
	var names []string
	r, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Manifest().Parts {
		names = append(names, p.Name)
	}
	for _, set := range offsetSets(len(file), starts) {
		t.Run(set.name, func(t *testing.T) {
			for _, i := range set.offsets {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					if err := checkFlip(file, i, mask, where(i), names); err != nil {
						t.Errorf("byte %d (%s) ^ %#x: %v", i, where(i), mask, err)
					}
				}
			}
		})
	}
}

func checkFlip(file []byte, i int, mask byte, region string, names []string) error {
	b := slices.Clone(file)
	b[i] ^= mask
	r, err := Open(bytes.NewReader(b), int64(len(b)))
	if err == nil {
		err = r.Verify()
	}
	var pe *PartError
	named := errors.As(err, &pe)
	switch region {
	case "header":
		if !errors.Is(err, ErrUnknownFormat) {
			return fmt.Errorf("Verify = %v, want unknown format", err)
		}
	case "manifest":
		if !errors.Is(err, ErrChecksum) || named {
			return fmt.Errorf("Verify = %v, want a manifest checksum mismatch", err)
		}
	case "trailer":
		if err == nil || named {
			return fmt.Errorf("Verify = %v, want refused naming no part", err)
		}
	default:
		if !named || pe.Part != region || !(errors.Is(err, ErrChecksum) || errors.Is(err, ErrCorrupt)) {
			return fmt.Errorf("Verify = %v, want damage in part %q", err, region)
		}
		if r == nil {
			return fmt.Errorf("Open failed on damage inside a part")
		}
		for _, name := range names {
			_, err := readAll(r, name)
			named := errors.As(err, &pe)
			if name == region && (!named || pe.Part != name) {
				return fmt.Errorf("reading %s: %v, want refused naming it", name, err)
			}
			if name != region && err != nil {
				return fmt.Errorf("reading undamaged %s: %v", name, err)
			}
		}
	}
	return nil
}

// Records moved whole keep every CRC valid: only a part's SHA-256 (in its
// end record, and in the manifest) finds them.
func TestSplicedRecordsRefused(t *testing.T) {
	rec := build(t, 64, metaPart(200), groupPart(1, 200))
	file, s := rec.Bytes(), rec.starts
	// s: 0 header, 1 begin meta, 2..5 frames (64, 64, 64, 8), 6 end,
	// 7 begin group-1, 8..11 frames, 12 end, 13 manifest, 14 trailer.
	if len(s) != 15 {
		t.Fatalf("%d records, the cases below assume 15", len(s))
	}
	span := func(from, to int) []byte { return file[s[from]:s[to]] }
	tests := []struct {
		name   string
		splice func(b []byte)
		part   string
	}{
		{"two frames of a part swapped", func(b []byte) {
			copy(b[s[2]:], span(3, 4))
			copy(b[s[3]:], span(2, 3))
		}, MetaPartName},
		{"a frame of another part", func(b []byte) { copy(b[s[3]:], span(9, 10)) }, MetaPartName},
		{"a frame repeated", func(b []byte) { copy(b[s[4]:], span(3, 4)) }, MetaPartName},
		{"two parts' frames and end records swapped", func(b []byte) {
			copy(b[s[2]:], span(8, 13))
			copy(b[s[8]:], span(2, 7))
		}, MetaPartName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := slices.Clone(file)
			tc.splice(b)
			if bytes.Equal(b, file) {
				t.Fatal("splice changed nothing")
			}
			r, err := Open(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			err = r.Verify()
			var pe *PartError
			if !errors.Is(err, ErrChecksum) || !errors.As(err, &pe) || pe.Part != tc.part {
				t.Fatalf("Verify = %v, want a checksum mismatch in %q", err, tc.part)
			}
			if _, err := readAll(r, tc.part); !errors.Is(err, ErrChecksum) {
				t.Errorf("reading %s: %v, want a checksum mismatch", tc.part, err)
			}
		})
	}
}
