package node

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestSnapshotThreshold(t *testing.T) {
	for _, tc := range []struct {
		name       string
		snapBytes  int64
		entryBytes int
		want       uint64
	}{
		{"no snapshot yet", 0, 300, 8192},
		{"empty log", 1 << 30, 0, 8192},
		{"small state keeps the floor", 1 << 20, 300, 8192},
		{"1 GiB of 300-byte entries: a quarter of it", 1 << 30, 300, (1 << 30) / (4 * 300)},
		{"tiny entries are capped", 1 << 34, 10, maxSnapshotThreshold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := snapshotThreshold(8192, tc.snapBytes, tc.entryBytes); got != tc.want {
				t.Fatalf("snapshotThreshold(8192, %d, %d) = %d, want %d", tc.snapBytes, tc.entryBytes, got, tc.want)
			}
		})
	}
}

// The store reports the bytes of a snapshot it kept, and nothing for one
// that was cancelled.
func TestSizedSnapshotsReportKeptSnapshots(t *testing.T) {
	var sizes []int64
	store := &sizedSnapshots{SnapshotStore: raft.NewInmemSnapshotStore(), onSize: func(n int64) { sizes = append(sizes, n) }}
	write := func(n int, keep bool) {
		sink, err := store.Create(raft.SnapshotVersionMax, 10, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(sink, string(make([]byte, n))); err != nil {
			t.Fatal(err)
		}
		if keep {
			err = sink.Close()
		} else {
			err = sink.Cancel()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	write(1000, true)
	write(500, false)
	write(70000, true)
	if len(sizes) != 2 || sizes[0] != 1000 || sizes[1] != 70000 {
		t.Fatalf("reported sizes %v, want [1000 70000]", sizes)
	}
}

// A group whose snapshot is large relative to its entries raises its Raft
// snapshot threshold to a quarter of the snapshot's bytes in entries, and
// keeps it across a restart.
func TestSnapshotThresholdGrowsWithTheState(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	cfg.Shards = 1
	cfg.SnapshotThreshold = 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := startReady(t, cfg)
	var g *Group
	for _, sg := range n.ShardMap().Groups {
		g = n.Group(sg.ID)
	}
	payload := make([]byte, 4000)
	for i := range 100 {
		if _, err := n.Append(ctx, AppendRequest{Timeline: fmt.Sprint("t", i), Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStore(g.dir, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("snapshots: %v %v", metas, err)
	}
	want := snapshotThreshold(4, metas[0].Size, g.snapTuner.entryBytes())
	if want <= 4 {
		t.Fatalf("the test's state is too small to raise the threshold: %d bytes", metas[0].Size)
	}
	if got := g.raft.ReloadableConfig().SnapshotThreshold; got != want {
		t.Fatalf("threshold after a %d-byte snapshot: %d, want %d", metas[0].Size, got, want)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Bootstrap = false
	cfg.RaftAddr, cfg.GossipAddr = n.Config().RaftAddr, n.Config().GossipAddr
	n = startReady(t, cfg)
	defer n.Close()
	g = n.Group(g.id)
	if got := g.raft.ReloadableConfig().SnapshotThreshold; got != want {
		t.Fatalf("threshold after a restart: %d, want %d", got, want)
	}
}
