package node

// The cluster id keeps clusters apart: a restored cluster is a copy of
// another (same node ids, same addresses in its registry), and must never
// exchange Raft traffic or gossip with it, nor take its nodes in a join.
//
// The id is random (NewClusterID), made once, when a node bootstraps a
// cluster on an empty data dir, unless the data dir already holds one: a
// restore writes the new cluster's id with WriteClusterID into the fresh
// data dir before it starts the node with Bootstrap. It lives in two
// places:
//
//   - DATA_DIR/CLUSTER_ID, so a node knows its cluster before its meta
//     group has replayed: its Raft port refuses other clusters from the
//     first connection (node/raftmux) and its gossip from the first message;
//   - the meta group's state (fsm SetClusterID), proposed by the meta
//     leader, so every member holds the same id and a node that lost its
//     file learns it again.
//
// A node started on an empty data dir without Bootstrap has no id: it
// takes the id of the first Raft connection that carries one (the leader
// of the cluster it asked to join), from the join's answer
// (AdoptClusterID), or from its meta group, whichever comes first, and
// writes the file. A cluster bootstrapped before cluster ids gets one from
// its meta leader once every registered node gossips that it knows them.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/durable"
	"github.com/syncstore/syncstore/shard"
)

const clusterIDFile = "CLUSTER_ID"

// ErrOtherCluster marks a node, join or id of another cluster than this
// node's.
var ErrOtherCluster = errors.New("of another cluster")

// NewClusterID returns a new random cluster id: 16 random bytes in hex.
func NewClusterID() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails: crypto/rand crashes the program rather than return short
	return hex.EncodeToString(b)
}

// ReadClusterID returns the cluster id recorded in dataDir, "" when none
// is (an empty data dir, or one written before cluster ids).
func ReadClusterID(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, clusterIDFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("node: read %s: %w", clusterIDFile, err)
	}
	id := strings.TrimSpace(string(b))
	if err := fsm.ValidateClusterID(id); err != nil {
		return "", fmt.Errorf("node: %s in %s: %w", clusterIDFile, dataDir, err)
	}
	return id, nil
}

// WriteClusterID records id as the cluster of the node on dataDir (made if
// missing). A restore calls it on the new cluster's fresh data dir, with
// NewClusterID, before starting the node with Bootstrap: the cluster then
// bootstraps with that id. Writing the id the dir holds is a no-op;
// another is refused (wrapping ErrOtherCluster): a data dir never changes
// cluster.
func WriteClusterID(dataDir, id string) error {
	if err := fsm.ValidateClusterID(id); err != nil {
		return fmt.Errorf("node: cluster id: %w", err)
	}
	cur, err := ReadClusterID(dataDir)
	if err != nil {
		return err
	}
	switch cur {
	case id:
		return nil
	case "":
	default:
		return fmt.Errorf("node: %s belongs to cluster %s, not %s: %w", dataDir, cur, id, ErrOtherCluster)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("node: data dir: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dataDir, clusterIDFile), []byte(id+"\n")); err != nil {
		return fmt.Errorf("node: write %s: %w", clusterIDFile, err)
	}
	return nil
}

// initClusterID reads the data dir's id before the Raft port opens, and
// makes one when this node bootstraps a new cluster. waitsForJoin: the
// data dir is empty and the node does not bootstrap (its Raft port adopts
// the first id it hears).
func (n *Node) initClusterID() (waitsForJoin bool, err error) {
	id, err := ReadClusterID(n.cfg.DataDir)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(filepath.Join(groupDir(n.cfg.DataDir, shard.MetaGroup), "raft.db"))
	fresh := errors.Is(err, os.ErrNotExist)
	if id == "" && fresh && n.cfg.Bootstrap {
		id = NewClusterID()
		if err := WriteClusterID(n.cfg.DataDir, id); err != nil {
			return false, err
		}
		n.log.Info("new cluster", "cluster_id", id)
	}
	n.clusterID = id
	return id == "" && fresh && !n.cfg.Bootstrap, nil
}

// ClusterID is the cluster this node belongs to, "" before it knows one.
func (n *Node) ClusterID() string {
	n.clusterMu.Lock()
	defer n.clusterMu.Unlock()
	return n.clusterID
}

// AdoptClusterID records the cluster id a join answered with. Adopting the
// id the node has, or "" (a cluster made before cluster ids), is a no-op;
// another id is refused (ErrOtherCluster).
func (n *Node) AdoptClusterID(id string) error {
	if id == "" {
		return nil
	}
	if err := n.recordClusterID(id, "join"); err != nil {
		return err
	}
	return n.spreadClusterID(id)
}

// ForeignRaftConnsRefused counts the Raft connections this node closed
// because they came from another cluster.
func (n *Node) ForeignRaftConnsRefused() uint64 { return n.mux.RefusedForeign() }

// CheckJoinCluster refuses a join of a node of another cluster: id is the
// cluster the joining node says (or its NodeStatus shows) it belongs to,
// "" for an empty data dir. A node that has no id yet lets it through to
// the meta leader (it forwards the join); the leader of a cluster without
// an id refuses any node that has one. The error wraps ErrOtherCluster
// and names both ids.
func (n *Node) CheckJoinCluster(nodeID, id string) error {
	own := n.ClusterID()
	switch {
	case id == "" || id == own:
		return nil
	case own == "" && !n.meta.IsLeader():
		return nil
	case own == "":
		return fmt.Errorf("node %s belongs to cluster %s and this cluster has no id yet: %w", nodeID, id, ErrOtherCluster)
	}
	return fmt.Errorf("node %s belongs to cluster %s, this is cluster %s (a restored cluster and its original never mix): "+
		"join a node with an empty data dir, or one of this cluster: %w", nodeID, id, own, ErrOtherCluster)
}

// recordClusterID makes id this node's and writes it to the data dir,
// unless the node has another (ErrOtherCluster). It touches neither the
// Raft port nor gossip (the Raft port calls it from its handshake).
func (n *Node) recordClusterID(id, source string) error {
	n.clusterMu.Lock()
	defer n.clusterMu.Unlock()
	switch n.clusterID {
	case id:
		return nil
	case "":
	default:
		return fmt.Errorf("node: this node belongs to cluster %s, not %s (%s): %w", n.clusterID, id, source, ErrOtherCluster)
	}
	if err := WriteClusterID(n.cfg.DataDir, id); err != nil {
		return err
	}
	n.clusterID = id
	n.log.Info("joined cluster", "cluster_id", id, "learnt_from", source)
	return nil
}

// spreadClusterID gives the Raft port and gossip the node's id.
func (n *Node) spreadClusterID(id string) error {
	n.gossip.SetClusterID(id)
	if err := n.mux.SetClusterID(id); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// adoptFromRaft records the id the Raft port adopted from its first
// connection. It runs in the port's handshake, possibly before Start has
// finished: it only records; gossipLoop passes the id on to gossip.
func (n *Node) adoptFromRaft(id string) {
	if err := n.recordClusterID(id, "raft"); err != nil {
		n.log.Error("record the cluster id of the first raft connection", "cluster_id", id, "err", err)
	}
}

// reconcileClusterID, every reconcile round: a node learns the meta
// group's id; the meta leader proposes one when the group has none (the
// bootstrap's, or for a cluster made before cluster ids a new one), and,
// as the lone voter of a restored cluster whose state came with the old
// id, replaces it by its data dir's.
func (n *Node) reconcileClusterID(ctx context.Context) {
	stored, err := n.meta.fsm.ClusterID()
	if err != nil {
		n.log.Warn("read cluster id", "err", err)
		return
	}
	own := n.ClusterID()
	switch {
	case stored == own && own != "":
		return
	case stored == "":
		if n.meta.isReadyLeader() {
			n.proposeClusterID(ctx, own, "")
		}
	case own == "":
		if err := n.recordClusterID(stored, "meta group"); err != nil {
			n.log.Warn("record the cluster id", "err", err)
			return
		}
		if err := n.spreadClusterID(stored); err != nil {
			n.log.Warn("record the cluster id", "err", err)
		}
	case n.meta.isReadyLeader() && n.loneMetaVoter():
		n.proposeClusterID(ctx, own, stored)
	default:
		if !n.clusterWarned.Swap(true) {
			n.log.Error("this node's data dir and its meta group name different clusters; it keeps its data dir's",
				"cluster_id", own, "meta_cluster_id", stored)
		}
	}
}

// proposeClusterID proposes id (a new one when "") in place of expected.
// A new id for a cluster made before cluster ids waits until every
// registered node gossips that it knows them: an older binary would stop
// on the command.
func (n *Node) proposeClusterID(ctx context.Context, id, expected string) {
	if id == "" {
		if !n.everyNodeKnowsClusterIDs() {
			return
		}
		id = NewClusterID()
	}
	_, err := n.meta.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetClusterId{SetClusterId: &fsmpb.SetClusterID{ClusterId: id, Expected: expected}}})
	if err != nil {
		n.log.Warn("propose cluster id", "cluster_id", id, "err", err)
		return
	}
	n.log.Info("set the cluster id", "cluster_id", id, "replaced", expected)
}

func (n *Node) everyNodeKnowsClusterIDs() bool {
	nodes, err := n.registry()
	if err != nil || len(nodes) == 0 {
		return false
	}
	knows := map[string]bool{}
	for _, m := range n.gossip.Members() {
		knows[m.ID] = m.KnowsClusterIDs && m.Health == HealthAlive
	}
	for _, nd := range nodes {
		if nd.State != fsm.NodeRemoved && !knows[nd.ID] {
			return false
		}
	}
	return true
}

// loneMetaVoter: this node is the only server of the meta group.
func (n *Node) loneMetaVoter() bool {
	cf, _, err := n.meta.configuration()
	if err != nil || len(cf.Servers) != 1 {
		return false
	}
	s := cf.Servers[0]
	return string(s.ID) == n.cfg.NodeID && s.Suffrage == raft.Voter
}
