package node

// Rolling upgrades (see DESIGN.md, "Cluster versions"). A cluster of mixed
// binaries runs at its active version, which the meta group stores
// (fsm.SetClusterVersion): a command of a higher version is not proposed
// (checkCommandVersion), and a group's state machine would refuse it. The
// active version goes up only by FinalizeUpgrade, once every registered node
// answers that its binary supports the new one, or at the bootstrap of a
// new cluster, to the bootstrapping binary's version. Each data group
// leader copies the active version into its group. A binary that supports
// less than the active version refuses to start, and a running one that
// sees the active version pass it stops (Outdated).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/version"
	"github.com/syncstore/syncstore/shard"
)

var (
	// ErrBinaryTooOld: this binary supports a lower cluster version than
	// the cluster's active one; the node refuses to start (or stops).
	ErrBinaryTooOld = errors.New("node: this binary is too old for the cluster")
	// ErrUpgradeBlocked: a finalize found nodes whose binary does not
	// support the version, or that did not answer; the message names them.
	ErrUpgradeBlocked = errors.New("node: not every node supports the cluster version")
	// ErrNoUpgradeProbe: this binary has no UpgradeProbe command (only test
	// builds, tag syncstore_upgrade_test, have one).
	ErrNoUpgradeProbe = errors.New("node: this binary has no upgrade probe command (test builds only: -tags syncstore_upgrade_test)")
)

// upgradeState is the node's part of rolling upgrades.
type upgradeState struct {
	// newCluster: this process bootstrapped an empty data dir; its meta
	// leader sets the cluster's first version once every registered node
	// supports it.
	newCluster bool
	bootWarned bool // reconcile goroutine only

	once     sync.Once
	outdated chan struct{}
	mu       sync.Mutex
	err      error // why the node is outdated
}

func (u *upgradeState) ch() chan struct{} {
	u.once.Do(func() { u.outdated = make(chan struct{}) })
	return u.outdated
}

// BinaryVersion describes this binary: its release or module version, its
// VCS revision and the build tags that change what it supports.
func BinaryVersion() string {
	info := version.Get()
	s := info.Version
	if rev := info.Revision; rev != "" {
		s += " " + rev[:min(12, len(rev))]
	}
	if info.Modified {
		s += "+modified"
	}
	if fsm.HasUpgradeProbe() {
		s += " (upgrade test build)"
	}
	return s
}

// tooOld is the error of a binary that cannot run at cv.
func tooOld(cv fsm.ClusterVersion) error {
	when := "at bootstrap"
	if cv.SetAtMs > 0 {
		when = "finalized " + time.UnixMilli(cv.SetAtMs).UTC().Format(time.RFC3339)
	}
	return fmt.Errorf("%w: this binary (%s) supports cluster version %d; the cluster's active version is %d (%s): run a binary that supports version %d or later",
		ErrBinaryTooOld, BinaryVersion(), fsm.SupportedClusterVersion(), cv.Version, when, cv.Version)
}

// checkVersionAtStart reads the active version from the meta group's local
// state, before the node replays, joins or serves anything, and refuses a
// binary too old for it. It also notes whether this start bootstraps a new
// cluster.
func (n *Node) checkVersionAtStart() error {
	_, err := os.Stat(filepath.Join(groupDir(n.cfg.DataDir, shard.MetaGroup), "raft.db"))
	n.upgrade.newCluster = errors.Is(err, os.ErrNotExist) && n.cfg.Bootstrap
	st, err := n.storage.State(uint64(shard.MetaGroup))
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	cv, err := fsm.ReadClusterVersion(st)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if cv.Version > fsm.SupportedClusterVersion() {
		return tooOld(cv)
	}
	return nil
}

// Outdated is closed once the cluster's active version is above what this
// binary supports (a finalize this node applied late); OutdatedErr says so.
// The process should then stop (syncd does, with that error).
func (n *Node) Outdated() <-chan struct{} { return n.upgrade.ch() }

// OutdatedErr is why Outdated was closed (nil before).
func (n *Node) OutdatedErr() error {
	n.upgrade.mu.Lock()
	defer n.upgrade.mu.Unlock()
	return n.upgrade.err
}

// ClusterVersion is the cluster's active version as this node's meta
// replica has it.
func (n *Node) ClusterVersion() (fsm.ClusterVersion, error) { return n.meta.fsm.ClusterVersion() }

// reconcileClusterVersion, every round: a node whose binary is behind the
// active version stops (it reports true and the round ends); the meta
// leader of a new cluster sets the first version.
func (n *Node) reconcileClusterVersion(ctx context.Context) (outdated bool) {
	select {
	case <-n.upgrade.ch():
		return true
	default:
	}
	cv, err := n.meta.fsm.ClusterVersion()
	if err != nil {
		n.log.Warn("read cluster version", "err", err)
		return false
	}
	if cv.Version > fsm.SupportedClusterVersion() {
		err := tooOld(cv)
		n.log.Error("the cluster's active version passed this binary's: stopping", "err", err)
		n.upgrade.mu.Lock()
		n.upgrade.err = err
		n.upgrade.mu.Unlock()
		close(n.upgrade.ch())
		return true
	}
	// Nodes may join before this: the same check as a finalize's, so that
	// a joiner with an older binary keeps the base version (an operator
	// finalizes later).
	if n.upgrade.newCluster && !cv.Stored && fsm.SupportedClusterVersion() > fsm.BaseClusterVersion && n.meta.isReadyLeader() {
		v := fsm.SupportedClusterVersion()
		nodes, err := n.registry()
		if err != nil || len(nodes) == 0 {
			return false
		}
		if behind := n.nodesBehind(ctx, nodes, v); len(behind) > 0 {
			if !n.upgrade.bootWarned {
				n.upgrade.bootWarned = true
				n.log.Warn("new cluster: nodes behind this binary's cluster version; it stays at the base until `syncctl upgrade finalize`", "version", v, "behind", behind)
			}
			return false
		}
		if _, err := n.meta.propose(ctx, setVersionCmd(v, 0)); err != nil {
			n.log.Warn("set the new cluster's version", "version", v, "err", err)
			return false
		}
		n.upgrade.newCluster = false
		n.log.Info("new cluster: cluster version set", "version", v)
	}
	return false
}

func setVersionCmd(v, expected uint32) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_SetClusterVersion{SetClusterVersion: &fsmpb.SetClusterVersion{Version: v, Expected: expected}}}
}

// reconcileGroupVersion, as a data group's leader: copy the active version
// into the group.
func (n *Node) reconcileGroupVersion(ctx context.Context, g *Group) {
	active, err := n.meta.fsm.ClusterVersion()
	if err != nil || !active.Stored {
		return
	}
	if err := g.raiseVersion(ctx, active.Version); err != nil {
		n.log.Warn("set the group's cluster version", "group", uint64(g.id), "version", active.Version, "err", err)
	}
}

// ClusterVersion is the version this replica of the group runs at: the
// active one once its leader has copied it.
func (g *Group) ClusterVersion() (fsm.ClusterVersion, error) { return g.fsm.ClusterVersion() }

// raiseVersion raises the data group's version to v unless it is there.
func (g *Group) raiseVersion(ctx context.Context, v uint32) error {
	cur, err := g.fsm.ClusterVersion()
	if err != nil || cur.Version >= v {
		return err
	}
	_, err = g.propose(ctx, setVersionCmd(v, cur.Expected()))
	return err
}

// checkCommandVersion, before every proposal: a command of a version above
// the cluster's active one is refused. In a data group that has not been
// given the active version yet, the leader first raises it (its state
// machine would refuse the command otherwise).
func (g *Group) checkCommandVersion(ctx context.Context, cmd *fsmpb.Command) error {
	if fsm.CommandVersion(cmd) <= fsm.BaseClusterVersion {
		return nil
	}
	active, err := g.node.gate(cmd)
	if err != nil || g.id == shard.MetaGroup {
		return err
	}
	return g.raiseVersion(ctx, active)
}

// gate refuses a command of a version above the cluster's active one; it
// returns the active version. A node checks it before it forwards a
// request too: the leader it forwards to may run an older binary.
func (n *Node) gate(cmd *fsmpb.Command) (uint32, error) {
	active, err := n.meta.fsm.ClusterVersion()
	if err != nil {
		return 0, err
	}
	if need := fsm.CommandVersion(cmd); need > active.Version {
		return 0, fmt.Errorf("%w: %s needs cluster version %d; the cluster's active version is %d: run `syncctl upgrade finalize` once every node runs a binary that supports version %d",
			fsm.ErrClusterVersion, fsm.CommandName(cmd), need, active.Version, need)
	}
	return active.Version, nil
}

// FinalizeUpgrade raises the cluster's active version to target (0: the
// newest this binary supports; a node that forwards the call names the
// version, since the meta leader may run another binary), as the meta leader, once every registered
// node that is neither removed nor declared dead answers that its binary
// supports it. A node that does not answer blocks it: it may run an older
// binary. It returns the active version and whether this call raised it.
func (n *Node) FinalizeUpgrade(ctx context.Context, target uint32) (uint32, bool, error) {
	if target == 0 {
		target = fsm.SupportedClusterVersion()
	}
	if !n.meta.IsLeader() {
		return 0, false, n.meta.notLeader()
	}
	if !n.meta.isReadyLeader() {
		return 0, false, ErrLeaderNotReady
	}
	cv, err := n.meta.fsm.ClusterVersion()
	if err != nil {
		return 0, false, err
	}
	if cv.Version >= target {
		return cv.Version, false, nil
	}
	nodes, err := n.registry()
	if err != nil {
		return 0, false, err
	}
	// This node is in the list when its own binary is behind (an old meta
	// leader that a newer node forwarded the call to).
	if behind := n.nodesBehind(ctx, nodes, target); len(behind) > 0 || target > fsm.SupportedClusterVersion() {
		return 0, false, fmt.Errorf("%w: cluster version %d needs every node to run a binary that supports it (active: %d); behind: %s",
			ErrUpgradeBlocked, target, cv.Version, strings.Join(behind, "; "))
	}
	if _, err := n.meta.propose(ctx, setVersionCmd(target, cv.Expected())); err != nil {
		return 0, false, fmt.Errorf("node: finalize cluster version %d: %w", target, err)
	}
	n.log.Info("cluster version finalized", "version", target, "was", cv.Version)
	return target, true, nil
}

// nodesBehind asks every registered node that is neither removed nor
// declared dead for the version its binary supports, in parallel, and
// lists those below target or not answering.
func (n *Node) nodesBehind(ctx context.Context, nodes []fsm.Node, target uint32) []string {
	var mu sync.Mutex
	var behind []string
	note := func(id, why string) {
		mu.Lock()
		defer mu.Unlock()
		behind = append(behind, id+" "+why)
	}
	check := func(id string, supported uint32) {
		if supported < target {
			note(id, fmt.Sprintf("supports %d", max(supported, fsm.BaseClusterVersion)))
		}
	}
	var wg sync.WaitGroup
	for _, nd := range nodes {
		switch {
		case nd.State == fsm.NodeRemoved || nd.Dead:
			continue
		case nd.ID == n.cfg.NodeID:
			check(nd.ID, fsm.SupportedClusterVersion())
			continue
		case n.cfg.StatusFetcher == nil || nd.GRPCAddr == "":
			note(nd.ID, "cannot be asked")
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, viewTimeout)
			defer cancel()
			st, err := n.cfg.StatusFetcher(cctx, nd.GRPCAddr)
			switch {
			case err != nil:
				note(nd.ID, "did not answer: "+err.Error())
			case st.ID != nd.ID:
				note(nd.ID, "answered as "+st.ID)
			default:
				check(nd.ID, st.SupportedClusterVersion)
			}
		})
	}
	wg.Wait()
	slices.Sort(behind)
	return behind
}

// CheckJoinVersion refuses a join of a node whose binary supports less than
// the cluster's active version (0: a binary older than cluster versions,
// which supports the base version).
func (n *Node) CheckJoinVersion(nodeID string, supported uint32) error {
	cv, err := n.meta.fsm.ClusterVersion()
	if err != nil {
		return err
	}
	supported = max(supported, fsm.BaseClusterVersion)
	if supported < cv.Version {
		return fmt.Errorf("%w: node %s runs a binary that supports cluster version %d; the cluster's active version is %d: start it with a binary that supports version %d or later",
			ErrBinaryTooOld, nodeID, supported, cv.Version, cv.Version)
	}
	return nil
}

// UpgradeProbe proposes the test build's probe command in key's group and
// returns how many probes the group holds and the group.
func (n *Node) UpgradeProbe(ctx context.Context, key, note string) (uint64, shard.GroupID, error) {
	if !fsm.HasUpgradeProbe() {
		return 0, 0, ErrNoUpgradeProbe
	}
	p := &fsmpb.UpgradeProbe{Key: key, Note: note}
	if err := fsm.ValidateUpgradeProbe(p); err != nil {
		return 0, 0, err
	}
	cmd := &fsmpb.Command{Op: &fsmpb.Command_UpgradeProbe{UpgradeProbe: p}}
	if _, err := n.gate(cmd); err != nil {
		return 0, 0, err
	}
	g, err := n.route(key)
	if err != nil {
		return 0, 0, err
	}
	res, err := g.propose(ctx, cmd)
	if err != nil {
		return 0, 0, err
	}
	return res.Probes, g.id, nil
}
