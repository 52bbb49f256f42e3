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

// tinySnapshot is a snapshot of a small state, for seeds.
func tinySnapshot(tb testing.TB) []byte {
	tb.Helper()
	f := newFSM(tb)
	var logs []*raft.Log
	for i, cmd := range []*fsmpb.Command{
		appendCmd("a", "hello", "k1", 1000),
		appendCmd("a", "again", "", 1001),
	} {
		data, err := EncodeCommand(cmd)
		if err != nil {
			tb.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
	}
	f.ApplyBatch(logs)
	return persisted(tb, f)
}

// FuzzRestore restores arbitrary bytes into a fresh state machine. It must
// never panic; a refused stream wraps ErrBadSnapshot and leaves the state
// as it was and usable; an accepted one leaves a usable state (reads, a
// digest, a write, a reopen).
func FuzzRestore(f *testing.F) {
	snap := tinySnapshot(f)
	f.Add(snap)
	f.Add(snap[:len(snap)/2])
	f.Add([]byte(snapMagic))
	f.Add([]byte("not a database"))
	f.Add(persisted(f, newFSM(f))) // an empty state

	f.Fuzz(func(t *testing.T, in []byte) {
		h := newHarness(t)
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
		// Accepted (only a stream with a valid checksum is): reads answer
		// (errors are fine, panics are not) and the state reopens.
		if _, err := h.f.Digest(); err != nil {
			t.Fatalf("digest of an accepted snapshot: %v", err)
		}
		h.f.Nodes()
		h.f.Pull("a", 0, 100, 0)
		h.next = h.f.AppliedIndex() + 1
		if r := h.apply(appendCmd("fuzz-new", strings.Repeat("x", 3000), "", 1))[0]; r == nil || r.Err != nil {
			t.Fatalf("append after an accepted restore: %+v", r)
		}
		h.reopen()
		if _, err := h.f.Digest(); err != nil {
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
	snap := tinySnapshot(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzRestore")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"v2":           snap,
		"v2-cut":       snap[:len(snap)-10],
		"v2-header":    snap[:snapHeaderLen],
		"v2-no-sha":    snap[:len(snap)-32],
		"v2-flipped":   append(append(bytes.Clone(snap[:snapHeaderLen+5]), snap[snapHeaderLen+5]^1), snap[snapHeaderLen+6:]...),
		"not-snapshot": []byte("not a database"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
