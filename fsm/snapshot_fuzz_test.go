package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// tinySnapshots are a framed and an unframed snapshot of a small state on
// 1 KiB pages (a bbolt file is at least a few pages), for seeds. No
// idempotency keys: an accepted unframed stream is only checked for
// structure, and the append after it would read damaged dedupe records
// (gcDedupe slices their keys unchecked), which is not what this target is
// about.
func tinySnapshots(tb testing.TB) (framed, unframed []byte) {
	tb.Helper()
	f, _ := openPageSize(tb, 1024)
	var logs []*raft.Log
	for i, cmd := range []*fsmpb.Command{
		appendCmd("a", "hello", "", 1000),
		appendCmd("a", "again", "", 1001),
	} {
		data, err := EncodeCommand(cmd)
		if err != nil {
			tb.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
	}
	f.ApplyBatch(logs)
	return persisted(tb, f), rawBolt(tb, f)
}

// FuzzRestore restores arbitrary bytes into a fresh state machine. It must
// never panic; a refused stream wraps ErrBadSnapshot and leaves the state
// as it was and usable; an accepted one leaves a usable state (reads, a
// digest, a reopen).
func FuzzRestore(f *testing.F) {
	framed, unframed := tinySnapshots(f)
	f.Add(framed)
	f.Add(framed[:len(framed)/2])
	f.Add(unframed)
	f.Add(unframed[:len(unframed)-100])
	f.Add([]byte(snapMagic))
	f.Add([]byte("not a database"))
	src, _ := openPageSize(f, 0) // an empty state with default pages
	f.Add(persisted(f, src))

	f.Fuzz(func(t *testing.T, in []byte) {
		h := newHarnessPageSize(t, 0)
		h.apply(appendCmd("a", "before", "", 1))
		before := h.digest()
		err := h.f.Restore(io.NopCloser(bytes.NewReader(in)))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("refused without ErrBadSnapshot: %v", err)
			}
			if h.digest() != before {
				t.Fatal("a refused restore changed the state")
			}
			if r := h.apply(appendCmd("a", "after", "", 2))[0]; r == nil || r.Err != nil || r.Append.Seq != 2 {
				t.Fatalf("apply after a refused restore: %+v", r)
			}
			return
		}
		// Accepted: reads answer (errors are fine, panics are not) and the
		// state reopens.
		if _, err := h.f.Digest(); err != nil {
			t.Fatalf("digest of an accepted snapshot: %v", err)
		}
		h.f.Nodes()
		h.f.Pull("a", 0, 100, 0)
		// A write big enough to move inline buckets to pages of their own
		// (frees, splits); a fresh timeline, so no stored value is decoded.
		h.next = h.f.AppliedIndex() + 1
		if r := h.apply(appendCmd("fuzz-new", strings.Repeat("x", 3000), "", 1))[0]; r == nil || r.Err != nil {
			t.Fatalf("append after an accepted restore: %+v", r)
		}
		if err := h.f.Close(); err != nil {
			t.Fatal(err)
		}
		f2, err := Open(Options{Path: h.path, InitialMmapSize: 1 << 20})
		if err != nil {
			t.Fatalf("reopening an accepted snapshot: %v", err)
		}
		defer f2.Close()
		if _, err := f2.Digest(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteRestoreSeeds rewrites the committed seed corpus of FuzzRestore
// (SYNCSTORE_WRITE_SEEDS=1 go test ./fsm -run TestWriteRestoreSeeds), after
// a change to the snapshot format.
func TestWriteRestoreSeeds(t *testing.T) {
	if os.Getenv("SYNCSTORE_WRITE_SEEDS") == "" {
		t.Skip("set SYNCSTORE_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzRestore")
	}
	framed, unframed := tinySnapshots(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzRestore")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"framed-1k":         framed,
		"framed-cut-1k":     framed[:len(framed)-snapTrailerLen/2],
		"unframed-1k":       unframed,
		"unframed-cut-1k":   unframed[:3*1024],
		"framed-header":     framed[:snapHeaderLen],
		"unframed-not-bolt": []byte("not a database"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
