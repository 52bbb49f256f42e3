package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
)

// A replica that finds its state damaged (a stored value failing its
// checksum, on a read or at apply) is fenced: it serves no read and takes
// no write, hands leadership away, and says so in gossip. The group's
// leader then takes it out of the configuration; once out (or a
// non-voter), the replica drops its state, log and snapshots and comes
// back empty, and the leader adds it again and sends it a snapshot, as for
// any new replica. Its Raft stable store (term and vote) stays. A group
// with this node as its only voter has no healthy replica to copy: its
// state is rebuilt from its own snapshots and log instead.

// ErrFenced: the replica is fenced (fsm.ErrFenced).
var ErrFenced = fsm.ErrFenced

// fence marks the replica damaged (once).
func (g *Group) fence(cause error) {
	reason := cause.Error()
	if !g.fenced.CompareAndSwap(nil, &reason) {
		return
	}
	g.readyTerm.Store(0)
	g.node.metrics.fenced.Inc()
	g.log.Error("replica fenced: its state is damaged; it serves nothing until it is rebuilt from a healthy replica", "cause", cause)
}

// Fenced says why the replica is fenced, "" when it is not.
func (g *Group) Fenced() string {
	if p := g.fenced.Load(); p != nil {
		return *p
	}
	return ""
}

// checkFenced refuses service from a fenced replica.
func (g *Group) checkFenced() error {
	if p := g.fenced.Load(); p != nil {
		return fmt.Errorf("%w (group %d: %s)", ErrFenced, g.id, *p)
	}
	return nil
}

// readResult fences the replica when a read met damage; the error stands.
func (g *Group) readResult(err error) error {
	if errors.Is(err, fsm.ErrCorruptState) {
		g.fence(err)
	}
	return err
}

// handOverFenced asks Raft to hand a fenced replica's leadership to any
// other voter (it cannot check which has caught up: its own view is what
// is damaged; Raft only hands over to one whose log matches).
func (n *Node) handOverFenced(ctx context.Context, g *Group) {
	t := n.transfers[g.id]
	if time.Now().Before(t.next) {
		return
	}
	g.raft.LeadershipTransfer()
	n.transfers[g.id] = transferState{tries: t.tries + 1, next: time.Now().Add(transferBackoff)}
	n.log.Warn("fenced replica leads its group: handing leadership over", "group", uint64(g.id))
}

// reconcileFenced runs on the leader of a group before its other
// membership changes: a voter that gossip reports fenced is taken out (the
// next rounds add it back as a non-voter once it has come back empty). It
// reports whether it acted.
func (n *Node) reconcileFenced(ctx context.Context, g *Group, in map[string]raft.Server) bool {
	for _, m := range n.gossip.Members() {
		if m.ID == n.cfg.NodeID || !slices.Contains(m.Fenced, g.id) {
			continue
		}
		if s, ok := in[m.ID]; ok {
			n.log.Warn("taking a fenced replica out of its group, to add it back empty", "group", uint64(g.id), "replica", m.ID, "suffrage", s.Suffrage.String())
			n.logErr(g.removeServer(ctx, m.ID))
			return true
		}
	}
	return false
}

// rebuildFenced rebuilds this node's fenced replicas that may be: those
// no longer voters of their group, from the leader; a group's only voter,
// from its own snapshots and log.
func (n *Node) rebuildFenced() {
	for _, g := range n.groupsSnapshot() {
		if g.Fenced() == "" {
			continue
		}
		cf, _, err := g.configuration()
		if err != nil {
			continue
		}
		var voters []string
		isVoter := false
		for _, s := range cf.Servers {
			if s.Suffrage == raft.Voter {
				voters = append(voters, string(s.ID))
				isVoter = isVoter || string(s.ID) == n.cfg.NodeID
			}
		}
		switch {
		case !isVoter:
			n.rebuildGroup(g, false)
		case len(voters) == 1:
			n.rebuildGroup(g, true)
		}
	}
}

// rebuildGroup closes a fenced replica, drops its state (and, unless
// fromOwnLog, its log and snapshots) and opens it again.
func (n *Node) rebuildGroup(g *Group, fromOwnLog bool) {
	id := g.id
	n.mu.Lock()
	delete(n.groups, id)
	n.mu.Unlock()
	if err := g.Close(); err != nil {
		n.log.Warn("close a fenced group", "group", uint64(id), "err", err)
	}
	err := n.wipeGroup(g, fromOwnLog)
	if err != nil {
		n.log.Error("rebuild a fenced group: drop its state", "group", uint64(id), "err", err)
	}
	ng, oerr := n.openGroup(id, false, nil)
	if oerr != nil {
		n.log.Error("rebuild a fenced group: reopen", "group", uint64(id), "err", oerr)
		return // the next reconcile round opens it
	}
	n.mu.Lock()
	n.groups[id] = ng
	n.mu.Unlock()
	n.publishGroups() // no longer fenced: the leader must not take it out again
	if fromOwnLog {
		n.log.Warn("rebuilt a fenced replica from its own snapshots and log (the group's only voter)", "group", uint64(id))
	} else {
		n.log.Warn("rebuilding a fenced replica: dropped its state, log and snapshots; its leader sends it a snapshot", "group", uint64(id))
	}
}

func (n *Node) wipeGroup(g *Group, keepLog bool) error {
	st, err := n.storage.State(uint64(g.id))
	if err != nil {
		return err
	}
	if err := st.Drop(); err != nil {
		return err
	}
	if keepLog {
		return nil
	}
	l, err := n.storage.Log(uint64(g.id))
	if err != nil {
		return err
	}
	if err := l.Reset(); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(g.dir, "snapshots"))
}

// TransferLeadership asks Raft to hand this group, which this replica
// leads, to the voter id, and waits for the outcome.
func (g *Group) TransferLeadership(ctx context.Context, id string) error {
	cf, _, err := g.configuration()
	if err != nil {
		return err
	}
	for _, s := range cf.Servers {
		if string(s.ID) == id {
			ctx, cancel := g.withDefaultTimeout(ctx)
			defer cancel()
			return g.await(ctx, func() raft.Future { return g.raft.LeadershipTransferToServer(s.ID, s.Address) })
		}
	}
	return fmt.Errorf("node: group %d has no server %s", g.id, id)
}
