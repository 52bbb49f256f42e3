package node

import (
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// A data group's snapshot is a full copy of its state, so a fixed
// threshold of new entries makes a large group rewrite its whole state
// over and over (a 1 GiB group, every 8192 entries: gigabytes of writes per
// megabyte appended). The threshold therefore grows with the state: a
// snapshot is taken once the log since the last one holds about a quarter
// of that snapshot's bytes. Snapshot writing then costs at most about four
// times the bytes appended, however large the group, and the log a
// restarting or lagging replica replays stays within a quarter of the
// state. The configured threshold stays the floor, so small groups
// snapshot as before.
const (
	// snapshotLogRatio: a snapshot is due when the log since the last one
	// reaches 1/snapshotLogRatio of its size.
	snapshotLogRatio = 4
	// maxSnapshotThreshold bounds the entries between snapshots, and so
	// the in-memory log index (24 bytes per entry) a group holds.
	maxSnapshotThreshold = 1 << 20
)

// snapshotThreshold is the number of new entries after which a group whose
// last snapshot holds snapBytes, and whose entries are about entryBytes
// each, snapshots again.
func snapshotThreshold(floor uint64, snapBytes int64, entryBytes int) uint64 {
	if snapBytes <= 0 || entryBytes <= 0 {
		return floor
	}
	n := uint64(snapBytes) / (snapshotLogRatio * uint64(entryBytes))
	return max(floor, min(n, maxSnapshotThreshold))
}

// sizedSnapshots is the group's snapshot store, telling onSize the size of
// every snapshot it keeps: the group's own and one installed from the
// leader.
type sizedSnapshots struct {
	raft.SnapshotStore
	onSize func(int64)
}

func (s *sizedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &sizedSink{SnapshotSink: sink, onSize: s.onSize}, nil
}

type sizedSink struct {
	raft.SnapshotSink
	n      int64
	onSize func(int64)
}

func (s *sizedSink) Write(p []byte) (int, error) {
	n, err := s.SnapshotSink.Write(p)
	s.n += int64(n)
	return n, err
}

func (s *sizedSink) Close() error {
	err := s.SnapshotSink.Close()
	if err == nil {
		s.onSize(s.n)
	}
	return err
}

// snapshotTuner sets a data group's Raft snapshot threshold from the size
// of its newest snapshot.
type snapshotTuner struct {
	floor      uint64
	entryBytes func() int
	raft       atomic.Pointer[raft.Raft]
	threshold  atomic.Uint64
}

// initial is the threshold to start Raft with, from the newest snapshot
// already on disk.
func (t *snapshotTuner) initial(snaps raft.SnapshotStore) uint64 {
	th := t.floor
	if metas, err := snaps.List(); err == nil && len(metas) > 0 {
		th = snapshotThreshold(t.floor, metas[0].Size, t.entryBytes())
	}
	t.threshold.Store(th)
	return th
}

// observe takes a new snapshot's size and reloads Raft's threshold when it
// changed.
func (t *snapshotTuner) observe(size int64) {
	th := snapshotThreshold(t.floor, size, t.entryBytes())
	r := t.raft.Load()
	if r == nil || t.threshold.Swap(th) == th {
		return
	}
	rc := r.ReloadableConfig()
	rc.SnapshotThreshold = th
	_ = r.ReloadConfig(rc) // only invalid settings fail, and th >= floor is valid
}
