package node

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/durable"
	"github.com/syncstore/syncstore/internal/logbridge"
	"github.com/syncstore/syncstore/shard"
)

// A restore (Config.RestoreFrom) boots a new one-node cluster from a
// backup: every part is verified before the data dir is touched; then
// each group gets a Raft snapshot at the index its part was cut at, with
// this node as its only voter, and Raft starts from it as after any
// snapshot install. The meta group's state is rebased first
// (fsm.RebaseRestoredMeta): this node is the only member and replica, and
// the cluster id is the new one initClusterID made. Nodes that join later
// get their replicas from this one.

// restoreMarker, in a data dir, says a restore began there and has not
// finished: Start refuses the dir unless it is asked to restore again
// (which starts over).
const restoreMarker = "RESTORING"

// restoreSnapshotTerm is the term of the restored snapshots: the new
// cluster's Raft logs start over, after the backup's indexes.
const restoreSnapshotTerm = 1

// ErrRestore marks a restore refused: a damaged or incomplete backup, a
// data dir that is not empty, or a backup taken during a slot move.
var ErrRestore = errors.New("restore refused")

// openVerifiedBackup opens the backup and checks every part's checksum,
// before anything is written.
func openVerifiedBackup(path string) (*backup.Reader, error) {
	r, err := backup.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: %w: %s: %w", ErrRestore, path, err)
	}
	if err := r.Verify(); err != nil {
		r.Close()
		return nil, fmt.Errorf("node: %w: %s: %w", ErrRestore, path, err)
	}
	m := r.Manifest()
	if _, ok := m.Part(backup.MetaPartName); !ok {
		r.Close()
		return nil, fmt.Errorf("node: %w: %s has no %q part", ErrRestore, path, backup.MetaPartName)
	}
	return r, nil
}

// checkRestoreMarker refuses a data dir where a restore did not finish,
// unless this start restores again.
func checkRestoreMarker(dataDir string, restoring bool) error {
	_, err := os.Stat(filepath.Join(dataDir, restoreMarker))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("node: %w", err)
	case restoring:
		return nil
	}
	return fmt.Errorf("node: %w: %s holds a restore that did not finish (%s): start it again with the same --restore, or wipe it",
		ErrRestore, dataDir, restoreMarker)
}

// prepareRestoreDir makes sure the data dir holds no node state (or only
// what an unfinished restore left, which it removes) and marks it.
func prepareRestoreDir(dataDir string) error {
	state := []string{"meta", "groups", "storage"}
	if _, err := os.Stat(filepath.Join(dataDir, restoreMarker)); err == nil {
		for _, d := range state {
			if err := os.RemoveAll(filepath.Join(dataDir, d)); err != nil {
				return fmt.Errorf("node: restore: clear the unfinished restore: %w", err)
			}
		}
	} else {
		for _, d := range state {
			entries, err := os.ReadDir(filepath.Join(dataDir, d))
			if err == nil && len(entries) > 0 {
				return fmt.Errorf("node: %w: %s already holds a node's state (%s): a restore needs an empty data dir (to start the node on its state, leave out the restore)", ErrRestore, dataDir, d)
			}
		}
	}
	if err := durable.WriteFile(filepath.Join(dataDir, restoreMarker), []byte("restore started "+time.Now().UTC().Format(time.RFC3339)+"\n")); err != nil {
		return fmt.Errorf("node: restore: %w", err)
	}
	return nil
}

// restoreGroups writes every group of the backup into the data dir, then
// removes the marker. It runs in Start once the node's addresses are
// known and before any group opens: every part is loaded into its
// group's state and checked against the manifest; the meta state is
// rebased; conversations are raised to what their members hold
// (fsm.RaiseHeads); then each state becomes its group's Raft snapshot.
func (n *Node) restoreGroups(r *backup.Reader) error {
	m := r.Manifest()
	self := fsm.Node{ID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, GRPCAddr: n.cfg.GRPCAddr, GossipAddr: n.cfg.GossipAddr}
	n.log.Info("restoring a backup", "cluster_id_of_backup", m.ClusterID, "created", m.Created, "parts", len(m.Parts), "new_cluster_id", n.ClusterID())
	loaded := map[shard.GroupID]*fsm.FSM{}
	defer func() {
		for _, f := range loaded {
			f.Close()
		}
	}()
	meta, err := n.loadPart(r, shard.MetaGroup, backup.MetaPartName)
	if err != nil {
		return err
	}
	loaded[shard.MetaGroup] = meta
	if cv, err := meta.ClusterVersion(); err != nil {
		return fmt.Errorf("node: restore meta: %w", err)
	} else if cv.Version > fsm.SupportedClusterVersion() {
		return fmt.Errorf("node: %w: the backup's cluster runs at version %d: %w", ErrRestore, cv.Version, tooOld(cv))
	}
	if err := meta.RebaseRestoredMeta(time.Now().UnixMilli(), self); err != nil {
		return fmt.Errorf("node: %w: part %q: %w", ErrRestore, backup.MetaPartName, err)
	}
	smap, err := meta.ShardMap()
	if err != nil {
		return fmt.Errorf("node: restore meta: %w", err)
	}
	for _, g := range smap.Groups {
		name := backup.GroupPartName(uint64(g.ID))
		info, ok := m.Part(name)
		if !ok {
			return fmt.Errorf("node: %w: part %q: group %d of the shard map is not in the backup", ErrRestore, name, g.ID)
		}
		if !slices.Equal(info.Ranges, backup.RangesOf(g.Ranges)) {
			return fmt.Errorf("node: %w: part %q: its slot ranges %v are not the shard map's %v", ErrRestore, name, info.Ranges, backup.RangesOf(g.Ranges))
		}
		if loaded[g.ID], err = n.loadPart(r, g.ID, name); err != nil {
			return err
		}
	}
	if err := n.repairDeliveries(smap, loaded); err != nil {
		return err
	}
	n.restored = map[shard.GroupID]RestoredGroup{}
	for id, f := range loaded {
		info, _ := m.Part(partName(id))
		size, err := n.writeRestoredSnapshot(id, f.AppliedIndex(), func(w io.Writer) error {
			return f.Export(w, func(uint64, string) error { return nil })
		})
		if err != nil {
			return fmt.Errorf("node: restore group %d: %w", id, err)
		}
		n.restored[id] = RestoredGroup{AppliedIndex: info.AppliedIndex, Digest: info.Digest, Bytes: size}
	}
	if err := os.Remove(filepath.Join(n.cfg.DataDir, restoreMarker)); err != nil {
		return fmt.Errorf("node: restore: %w", err)
	}
	if err := durable.SyncDir(n.cfg.DataDir); err != nil {
		return fmt.Errorf("node: restore: %w", err)
	}
	n.log.Info("restore done: this node is the new cluster's only member; join others to it", "groups", len(smap.Groups))
	return nil
}

func partName(id shard.GroupID) string {
	if id == shard.MetaGroup {
		return backup.MetaPartName
	}
	return backup.GroupPartName(uint64(id))
}

// repairDeliveries makes the two ends of every conversation's
// deliveries, and of every collection's copies, agree again
// (fsm/restore_marks.go): the groups were cut at different times. It
// holds every delivered mark in memory at once.
func (n *Node) repairDeliveries(smap *shard.Map, loaded map[shard.GroupID]*fsm.FSM) error {
	marks := map[string]map[string]fsm.DeliveryMark{} // conversation -> member -> its mark
	queues := map[string]fsm.ConversationQueue{}
	copied := map[string]uint64{}
	for id, f := range loaded {
		if id == shard.MetaGroup {
			continue
		}
		if err := readChains(f, marks, queues, copied); err != nil {
			return fmt.Errorf("node: restore group %d: %w", id, err)
		}
	}
	plan := fsm.PlanRepairs(marks, queues, copied, smap.GroupFor)
	for id, r := range plan.Groups {
		f := loaded[id]
		if f == nil { // cannot happen: every group of the map has its part
			return fmt.Errorf("%w: a repair for group %d, which the backup lacks", ErrRestore, id)
		}
		if r.Empty() {
			continue
		}
		if err := f.RepairDeliveries(*r); err != nil {
			return fmt.Errorf("node: restore group %d: %w", id, err)
		}
	}
	if plan.Ahead+plan.Behind > 0 {
		n.log.Warn("restore: conversations and their members' timelines were cut at different points; their delivery counters are raised so that fan-out goes on without reusing a seq or leaving a gap",
			"member_marks_ahead_of_their_conversation", plan.Ahead, "member_marks_behind_it", plan.Behind)
	}
	n.deliveryRepairs = plan.Ahead + plan.Behind
	return nil
}

// readChains adds one group's ends of the delivery and copy chains to
// what the other groups hold.
func readChains(f *fsm.FSM, marks map[string]map[string]fsm.DeliveryMark, queues map[string]fsm.ConversationQueue, copied map[string]uint64) error {
	err := f.DeliveryMarks(func(member, conv string, m fsm.DeliveryMark) error {
		if marks[conv] == nil {
			marks[conv] = map[string]fsm.DeliveryMark{}
		}
		marks[conv][member] = m
		return nil
	})
	if err != nil {
		return err
	}
	err = f.ConversationQueues(func(conv string, q fsm.ConversationQueue) error {
		queues[conv] = q
		return nil
	})
	if err != nil {
		return err
	}
	versions, err := f.CopiedVersions()
	if err != nil {
		return err
	}
	for source, v := range versions {
		copied[source] = max(copied[source], v)
	}
	return nil
}

// RestoredGroup is a group as a restore found it in the backup: the
// index it was cut at and the digest of its state there, checked against
// the manifest.
type RestoredGroup struct {
	AppliedIndex uint64
	Digest       string
	Bytes        int64
}

// Restored lists the groups this node restored at its start (nil when it
// did not restore).
func (n *Node) Restored() map[shard.GroupID]RestoredGroup { return maps.Clone(n.restored) }

// loadPart loads one part into the group's state and checks that it is
// the state the manifest describes (index and digest).
func (n *Node) loadPart(r *backup.Reader, id shard.GroupID, name string) (*fsm.FSM, error) {
	info, _ := r.Manifest().Part(name)
	part, err := r.Part(name)
	if err != nil {
		return nil, fmt.Errorf("node: %w: %w", ErrRestore, err)
	}
	st, err := n.storage.State(uint64(id))
	if err != nil {
		return nil, fmt.Errorf("node: restore group %d: %w", id, err)
	}
	f, err := fsm.Open(fsm.Options{State: st, Logger: n.log})
	if err != nil {
		return nil, fmt.Errorf("node: restore group %d: %w", id, err)
	}
	if err := f.Restore(io.NopCloser(part)); err != nil {
		f.Close()
		return nil, fmt.Errorf("node: %w: part %q: %w", ErrRestore, name, err)
	}
	digest, applied, err := f.DigestWithIndex()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: restore group %d: %w", id, err)
	}
	if applied != info.AppliedIndex || digest != info.Digest {
		f.Close()
		return nil, fmt.Errorf("node: %w: part %q holds the state at index %d with digest %s; its manifest says index %d, digest %s",
			ErrRestore, name, applied, digest, info.AppliedIndex, info.Digest)
	}
	n.log.Info("loaded a group", "group", uint64(id), "applied_index", applied, "digest", digest)
	return f, nil
}

// writeRestoredSnapshot puts a group's state into its snapshot store as
// the snapshot at index (at least 1, Raft's first), with this node as the
// only voter.
func (n *Node) writeRestoredSnapshot(id shard.GroupID, index uint64, write func(io.Writer) error) (int64, error) {
	dir := groupDir(n.cfg.DataDir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, logbridge.Hclog(n.log, "raft"))
	if err != nil {
		return 0, fmt.Errorf("snapshot store: %w", err)
	}
	index = max(index, 1)
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(n.cfg.NodeID), Address: raft.ServerAddress(n.cfg.RaftAddr), Suffrage: raft.Voter}}}
	// The snapshot's legacy peer list is encoded by a transport; an
	// in-memory one encodes an address as the network transport does.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(n.cfg.RaftAddr))
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, restoreSnapshotTerm, conf, index, trans)
	if err != nil {
		return 0, fmt.Errorf("create snapshot: %w", err)
	}
	cw := &countingWriter{w: sink}
	if err := write(cw); err != nil {
		return 0, errors.Join(err, sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return 0, fmt.Errorf("close snapshot: %w", err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n += int64(k)
	return k, err
}
