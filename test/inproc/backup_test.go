package inproc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/storage"
)

// backedUp is one group's part of a backup as the client received it.
type backedUp struct {
	applied uint64
	digest  string
	data    bytes.Buffer
}

// restoredFSM restores a part into a state machine of its own.
func restoredFSM(t *testing.T, part *backedUp) *fsm.FSM {
	t.Helper()
	e, err := storage.Open(storage.Options{Dir: t.TempDir(), InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	st, err := e.State(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.Open(fsm.Options{State: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Restore(io.NopCloser(bytes.NewReader(part.data.Bytes()))); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestBackupGroupsUnderLoad streams every group's backup from its leader
// while writers append, and restores each part on its own: it is the state
// the leader announced (index and digest), and it holds every append
// acknowledged before the backup started.
func TestBackupGroupsUnderLoad(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	cl := c.Client()
	w := startWorkload(t, cl, "backup", 8, numbered("bk-%d", 60), 2*time.Second)
	w.progress(t, 300)
	w.mu.Lock()
	before := maps.Clone(w.acks)
	w.mu.Unlock()

	m := c.Members[0].Node.ShardMap()
	ids := []shard.GroupID{shard.MetaGroup}
	for _, g := range m.Groups {
		ids = append(ids, g.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parts := map[shard.GroupID]*backedUp{}
	for _, id := range ids {
		part := &backedUp{}
		err := cl.BackupGroup(ctx, uint64(id), func(ch *syncv1.BackupChunk) error {
			if part.digest == "" {
				part.applied, part.digest = ch.GetAppliedIndex(), ch.GetDigest()
			}
			part.data.Write(ch.GetData())
			return nil
		})
		if err != nil {
			t.Fatalf("backup of group %d: %v", id, err)
		}
		parts[id] = part
	}
	w.progress(t, 100) // the writers went on through the backup
	w.finish()

	restored := map[shard.GroupID]*fsm.FSM{}
	for id, part := range parts {
		f := restoredFSM(t, part)
		d, err := f.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if d != part.digest || f.AppliedIndex() != part.applied || part.applied == 0 {
			t.Fatalf("group %d restored as %s at %d; the leader announced %s at %d", id, d, f.AppliedIndex(), part.digest, part.applied)
		}
		restored[id] = f
	}
	for key, a := range before {
		f := restored[m.GroupFor(a.timeline)]
		page, err := f.Pull(a.timeline, a.seq-1, 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) != 1 || page.Entries[0].Seq != a.seq || string(page.Entries[0].Payload) != a.payload {
			t.Fatalf("append %s (%s seq %d), acknowledged before the backup, is not in it: %+v", key, a.timeline, a.seq, page.Entries)
		}
	}
	if sm, err := restored[shard.MetaGroup].ShardMap(); err != nil || sm.Version != m.Version {
		t.Fatalf("the meta part's shard map: %v, %v; want version %d", sm, err, m.Version)
	}
	t.Logf("%d groups backed up; %d appends acknowledged before it, all present", len(parts), len(before))
}
