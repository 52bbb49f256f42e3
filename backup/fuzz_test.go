package backup

import (
	"bytes"
	"io"
	"testing"
)

// FuzzOpen: Open, Verify and Part never panic or allocate without bound on
// arbitrary bytes, and a file Verify accepts reads back every listed part
// at its listed length.
func FuzzOpen(f *testing.F) {
	valid := build(f, 64, metaPart(150), groupPart(1, 0), groupPart(2, 70)).Bytes()
	f.Add(valid)
	f.Add(build(f, MaxFrame).Bytes())
	f.Add(valid[:len(valid)/2])
	f.Add(valid[:headerLen])
	f.Add([]byte{})
	flipped := bytes.Clone(valid)
	flipped[len(flipped)-trailerLen-10] ^= 1
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		m := r.Manifest()
		verr := r.Verify()
		for _, p := range m.Parts {
			pr, err := r.Part(p.Name)
			var n int64
			if err == nil {
				n, err = io.Copy(io.Discard, pr)
			}
			if verr == nil && (err != nil || n != p.Length) {
				t.Fatalf("Verify passed, but part %s read %d of %d bytes: %v", p.Name, n, p.Length, err)
			}
		}
	})
}
