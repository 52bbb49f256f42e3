package node

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/storage"
)

// openTestFSM opens a state and applies n appends to timeline tl.
func openTestFSM(t *testing.T, tl string, n int) *fsm.FSM {
	t.Helper()
	eng, err := storage.Open(storage.Options{Dir: t.TempDir(), InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	st, err := eng.State(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.Open(fsm.Options{State: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var logs []*raft.Log
	for i := range n {
		data, err := fsm.EncodeCommand(&fsmpb.Command{NowMs: int64(i), Op: &fsmpb.Command_Append{Append: &fsmpb.Append{Timeline: tl, Payload: fmt.Append(nil, i)}}})
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
	}
	f.ApplyBatch(logs)
	return f
}

func digestOf(t *testing.T, f *fsm.FSM) string {
	t.Helper()
	d, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// storeSnapshot puts a snapshot of src into a snapshot store at Raft index
// index (ahead of src's applied index by entries no state machine sees).
func storeSnapshot(t *testing.T, src *fsm.FSM, index uint64) (raft.SnapshotStore, string) {
	t.Helper()
	dir := t.TempDir()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	s, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if err := s.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return snaps, filepath.Join(dir, "snapshots", sink.ID(), "state.bin")
}

// TestRestoreNewerSnapshotAtOpen: Raft starts as if its newest snapshot were
// applied, so a state left behind it (an installed snapshot whose restore
// failed, a crash mid-restore) is brought up to it before Raft starts;
// a snapshot ahead only by no-ops is left alone; one that cannot be
// restored stops the group from opening instead of skipping entries.
func TestRestoreNewerSnapshotAtOpen(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	src := openTestFSM(t, "t", 20)

	t.Run("a state behind the snapshot is restored", func(t *testing.T) {
		snaps, _ := storeSnapshot(t, src, 22)
		dst := openTestFSM(t, "t", 5)
		if err := restoreNewerSnapshot(dst, snaps, log); err != nil {
			t.Fatal(err)
		}
		if dst.AppliedIndex() != src.AppliedIndex() || digestOf(t, dst) != digestOf(t, src) {
			t.Fatalf("state at %d, want the snapshot's %d", dst.AppliedIndex(), src.AppliedIndex())
		}
	})
	t.Run("a snapshot ahead by no-ops only is not restored", func(t *testing.T) {
		snaps, _ := storeSnapshot(t, src, 22)
		dst := openTestFSM(t, "other", 20) // same applied index, other content
		before := digestOf(t, dst)
		if err := restoreNewerSnapshot(dst, snaps, log); err != nil {
			t.Fatal(err)
		}
		if digestOf(t, dst) != before {
			t.Fatal("the state was replaced")
		}
	})
	t.Run("a damaged snapshot ahead of the state stops the open", func(t *testing.T) {
		snaps, file := storeSnapshot(t, src, 22)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		dst := openTestFSM(t, "t", 5)
		before := digestOf(t, dst)
		err = restoreNewerSnapshot(dst, snaps, log)
		if err == nil {
			t.Fatal("a damaged snapshot ahead of the state was accepted")
		}
		if digestOf(t, dst) != before {
			t.Fatal("a refused snapshot changed the state")
		}
	})
}
