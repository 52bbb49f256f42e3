package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Exit codes of syncctl status, after it printed the cluster, beyond the
// 0, 1 and 2 of every command.
const (
	// exitDegraded: some group, or the meta group, has no leader or no
	// quorum (or no replica answered for it).
	exitDegraded = 3
	// exitNoCluster: the node that answered has not joined a cluster, or
	// the cluster has no shard map yet.
	exitNoCluster = 4
)

// exitError fails a command with an exit code of its own; main exits with
// ExitCode() instead of 1.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }
func (e exitError) ExitCode() int { return e.code }

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the whole cluster: nodes, groups, leaders, lagging replicas, quorum",
		Long: `Show the whole cluster: nodes, groups, leaders, lagging replicas, quorum.

Exit codes: 0 every group (the meta group included) has a leader and a
quorum; 3 some group has no leader or no quorum (degraded); 4 the node that
answered has not joined a cluster, or the cluster has no shard map yet;
1 and 2 as for every command. The status is printed in every case.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.ClusterStatusResponse
			err := g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
					return err
				})
			})
			if err != nil {
				return err
			}
			v := statusView(resp)
			if err := g.print(v, func(w io.Writer) { printStatus(w, v) }); err != nil {
				return err
			}
			return v.exitErr()
		},
	}
}

// exitErr is the error status ends with: nil for a whole cluster.
func (v clusterView) exitErr() error {
	switch {
	case v.NoCluster != "":
		return exitError{exitNoCluster, v.NoCluster}
	case len(v.Degraded) > 0:
		return exitError{exitDegraded, "cluster degraded: " + strings.Join(v.Degraded, "; ")}
	}
	return nil
}

type nodeView struct {
	ID           string `json:"id"`
	Gossip       string `json:"gossip"` // as seen by the node that answered
	MetaState    string `json:"meta_state"`
	Suffrage     string `json:"meta_suffrage"`
	RaftAddr     string `json:"raft_addr"`
	GRPCAddr     string `json:"grpc_addr"`
	MetaApplied  uint64 `json:"meta_applied_index"`
	MapVersion   uint64 `json:"shard_map_version"`
	GroupsHosted int    `json:"groups_hosted"`
	GroupsLed    int    `json:"groups_led"`
	// Disk: "ok", or what is wrong with the node's storage (low space, a
	// commit waiting for space, a state rebuilt at start).
	Disk      string `json:"disk,omitempty"`
	FreeBytes uint64 `json:"free_bytes,omitempty"`
	Error     string `json:"error,omitempty"`
}

type groupView struct {
	ID        uint64            `json:"id"`
	Leader    string            `json:"leader"`
	Term      uint64            `json:"term"`
	Voters    []string          `json:"voters"`
	Nonvoters []string          `json:"nonvoters,omitempty"`
	LastIndex uint64            `json:"last_index"`
	Lag       map[string]uint64 `json:"lag"` // follower -> entries behind the leader's commit index
	// CatchingUp: followers whose lag is not known yet (see statusView).
	CatchingUp []string `json:"catching_up,omitempty"`
	Quorum     bool     `json:"quorum"`
}

type clusterView struct {
	// ClusterID is the cluster of the node that answered ("" for a cluster
	// made before cluster ids, until its meta leader sets one).
	ClusterID string `json:"cluster_id"`
	// ClusterVersion is the cluster's active version and FinalizableTo the
	// version every node that answered supports (syncctl upgrade status
	// has the details); Version is the line printed about them.
	ClusterVersion uint32 `json:"cluster_version"`
	FinalizableTo  uint32 `json:"finalizable_to"`
	Version        string `json:"-"`
	ServedBy       string `json:"served_by"`
	MetaLeader     string `json:"meta_leader"`
	MetaTerm       uint64 `json:"meta_term"`
	MapVersion     uint64 `json:"shard_map_version"`
	AllQuorum      bool   `json:"all_groups_have_quorum"`
	// Degraded says what is missing (exit 3): a meta leader, a group's
	// leader or quorum.
	Degraded []string `json:"degraded,omitempty"`
	// NoCluster says why there is no cluster to show (exit 4).
	NoCluster string      `json:"no_cluster,omitempty"`
	Nodes     []nodeView  `json:"nodes"`
	Groups    []groupView `json:"groups"`
}

// statusView sums up what every node reported.
//
// A follower's lag is the leader's commit index less the follower's Raft
// applied index. Raft restarts a replica's commit index at 0 and its
// applied index at its newest snapshot (0 without one), and learns the
// commit index from the leader's next append, which comes only after the
// leader's backoff for a peer that was down (seconds): until then the
// difference is the whole log, however little the replica missed. Such a
// follower (commit index 0) is listed as catching up, its lag unknown.
func statusView(resp *syncv1.ClusterStatusResponse) clusterView {
	v := clusterView{ServedBy: resp.GetServedBy(), MetaLeader: resp.GetLeaderId(), AllQuorum: true}
	uv := upgradeViewOf(resp)
	v.ClusterVersion, v.FinalizableTo, v.Version = uv.ActiveVersion, uv.FinalizableTo, uv.line()
	suffrage := map[string]string{}
	health := map[string]string{}
	// hosted: every group gossip says some node hosts, so that a group no
	// replica answered for is not left out.
	hosted := map[uint64]bool{}
	var self *syncv1.NodeStatusResponse
	for _, n := range resp.GetNodes() {
		if n.GetNodeId() == resp.GetServedBy() {
			self = n
			v.ClusterID = n.GetClusterId()
			for _, m := range n.GetGossip() {
				health[m.GetNodeId()] = m.GetHealth()
				for _, id := range m.GetHosts() {
					hosted[id] = true
				}
			}
		}
	}
	type replica struct {
		node string
		st   *syncv1.GroupStatus
	}
	byGroup := map[uint64][]replica{}
	for _, n := range resp.GetNodes() {
		for _, m := range n.GetMembers() {
			suffrage[m.GetNodeId()] = m.GetSuffrage()
		}
		if n.GetNodeId() == resp.GetLeaderId() {
			v.MetaTerm = n.GetTerm()
		}
		v.MapVersion = max(v.MapVersion, n.GetShardMapVersion())
		nv := nodeView{
			ID: n.GetNodeId(), MetaState: n.GetState(), RaftAddr: n.GetRaftAddr(), GRPCAddr: n.GetGrpcAddr(),
			MetaApplied: n.GetAppliedIndex(), MapVersion: n.GetShardMapVersion(), GroupsHosted: len(n.GetGroups()),
			Disk: diskState(n.GetStorage()), FreeBytes: n.GetStorage().GetFreeBytes(),
		}
		for _, gs := range n.GetGroups() {
			byGroup[gs.GetGroupId()] = append(byGroup[gs.GetGroupId()], replica{n.GetNodeId(), gs})
			if gs.GetState() == "Leader" {
				nv.GroupsLed++
			}
		}
		v.Nodes = append(v.Nodes, nv)
	}
	for id, e := range resp.GetUnreachable() {
		v.Nodes = append(v.Nodes, nodeView{ID: id, MetaState: "unreachable", Error: e})
	}
	for i := range v.Nodes {
		v.Nodes[i].Suffrage = suffrage[v.Nodes[i].ID]
		if v.Nodes[i].Gossip = health[v.Nodes[i].ID]; v.Nodes[i].Gossip == "" {
			v.Nodes[i].Gossip = "unknown"
		}
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })

	for id, reps := range byGroup {
		gv := groupView{ID: id, Lag: map[string]uint64{}}
		var leader *syncv1.GroupStatus
		for _, r := range reps {
			if r.st.GetState() == "Leader" && (leader == nil || r.st.GetTerm() > leader.GetTerm()) {
				leader, gv.Leader = r.st, r.node
			}
		}
		if leader != nil {
			gv.Term, gv.LastIndex = leader.GetTerm(), leader.GetLastLogIndex()
			for _, m := range leader.GetMembers() {
				if m.GetSuffrage() == "Voter" {
					gv.Voters = append(gv.Voters, m.GetNodeId())
				} else {
					gv.Nonvoters = append(gv.Nonvoters, m.GetNodeId())
				}
			}
			// A quorum: a majority of voters answered and follow this term.
			inTerm := 0
			for _, r := range reps {
				if !slices.Contains(gv.Voters, r.node) || r.st.GetTerm() != leader.GetTerm() {
					continue
				}
				inTerm++
				switch {
				case r.node == gv.Leader:
				case r.st.GetCommitIndex() == 0 && leader.GetCommitIndex() > 0:
					gv.CatchingUp = append(gv.CatchingUp, r.node)
				case leader.GetCommitIndex() > r.st.GetAppliedIndex():
					gv.Lag[r.node] = leader.GetCommitIndex() - r.st.GetAppliedIndex()
				default:
					gv.Lag[r.node] = 0
				}
			}
			slices.Sort(gv.CatchingUp)
			gv.Quorum = inTerm > len(gv.Voters)/2
		}
		switch {
		case leader == nil:
			v.Degraded = append(v.Degraded, fmt.Sprintf("group %d has no leader", id))
		case !gv.Quorum:
			v.Degraded = append(v.Degraded, fmt.Sprintf("group %d has no quorum", id))
		}
		v.AllQuorum = v.AllQuorum && gv.Quorum
		v.Groups = append(v.Groups, gv)
	}
	for id := range hosted {
		if _, ok := byGroup[id]; !ok {
			v.Groups = append(v.Groups, groupView{ID: id, Lag: map[string]uint64{}})
			v.Degraded = append(v.Degraded, fmt.Sprintf("group %d: no replica answered", id))
			v.AllQuorum = false
		}
	}
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].ID < v.Groups[j].ID })
	slices.Sort(v.Degraded)
	if v.MetaLeader == "" {
		v.Degraded = append([]string{"the meta group has no leader"}, v.Degraded...)
	}
	switch {
	case self == nil || len(self.GetMembers()) == 0:
		// A node outside any meta configuration: started to join and not
		// (yet) let in. Its view has no nodes or groups to speak of.
		v.NoCluster = fmt.Sprintf("%s has not joined a cluster: it is in no meta group configuration and has no shard map (is the address it joins through reachable? see its log)", v.ServedBy)
	case v.MapVersion == 0:
		v.NoCluster = fmt.Sprintf("the cluster %s belongs to has no shard map yet (its meta leader writes the first one once elected)", v.ServedBy)
	}
	if v.NoCluster != "" {
		v.Degraded, v.AllQuorum = nil, false
	}
	return v
}

// diskState sums up a node's storage for the status table.
func diskState(s *syncv1.StorageStatus) string {
	var out []string
	if s.GetLowSpace() {
		out = append(out, fmt.Sprintf("LOW SPACE (%d MiB free < reserve %d MiB): writes refused", s.GetFreeBytes()>>20, s.GetReserveBytes()>>20))
	}
	if s.GetStalled() != "" {
		out = append(out, "state commit waiting for space")
	}
	if s.GetRebuilt() != "" {
		out = append(out, "state rebuilt at start: "+s.GetRebuilt())
	}
	if len(out) == 0 {
		return "ok"
	}
	return strings.Join(out, "; ")
}

func printClusterID(w io.Writer, id string) {
	if id == "" {
		id = "(none yet: made before cluster ids)"
	}
	fmt.Fprintf(w, "cluster %s\n", id)
}

func printStatus(w io.Writer, v clusterView) {
	meta := v.MetaLeader
	if meta == "" {
		meta = "none (election under way?)"
	}
	switch {
	case v.NoCluster != "":
		fmt.Fprintln(w, v.NoCluster)
	case len(v.Degraded) == 0:
		printClusterID(w, v.ClusterID)
		fmt.Fprintln(w, v.Version)
		fmt.Fprintf(w, "meta leader %s (term %d), shard map v%d, %d nodes, %d groups (gossip as seen by %s)\n", meta, v.MetaTerm, v.MapVersion, len(v.Nodes), len(v.Groups), v.ServedBy)
		fmt.Fprintln(w, "quorum: every group has one")
	default:
		printClusterID(w, v.ClusterID)
		fmt.Fprintln(w, v.Version)
		fmt.Fprintf(w, "meta leader %s (term %d), shard map v%d, %d nodes, %d groups (gossip as seen by %s)\n", meta, v.MetaTerm, v.MapVersion, len(v.Nodes), len(v.Groups), v.ServedBy)
		fmt.Fprintf(w, "quorum: MISSING: %s\n", strings.Join(v.Degraded, "; "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGOSSIP\tMETA\tRAFT\tGRPC\tMAP\tGROUPS\tLEADS\tDISK")
	for _, n := range v.Nodes {
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t(%s)\n", n.ID, n.Gossip, n.MetaState, n.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\tv%d\t%d\t%d\t%s\n", n.ID, n.Gossip, n.MetaState, strings.ToLower(n.Suffrage), n.RaftAddr, n.GRPCAddr, n.MapVersion, n.GroupsHosted, n.GroupsLed, n.Disk)
	}
	tw.Flush()
	if len(v.Groups) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tLEADER\tTERM\tVOTERS\tLAST INDEX\tFOLLOWER LAG\tQUORUM")
	for _, g := range v.Groups {
		leader := g.Leader
		if leader == "" {
			leader = "-"
		}
		lags := map[string]string{}
		for id, n := range g.Lag {
			lags[id] = fmt.Sprint(n)
		}
		for _, id := range g.CatchingUp {
			lags[id] = "catching up"
		}
		var lag []string
		for _, id := range slices.Sorted(maps.Keys(lags)) {
			lag = append(lag, id+":"+lags[id])
		}
		voters := strings.Join(g.Voters, ",")
		if len(g.Nonvoters) > 0 {
			voters += " (+" + strings.Join(g.Nonvoters, ",") + " catching up)"
		}
		q := "yes"
		if !g.Quorum {
			q = "NO"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\n", g.ID, leader, g.Term, voters, g.LastIndex, strings.Join(lag, " "), q)
	}
	tw.Flush()
}
