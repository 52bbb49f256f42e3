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

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the whole cluster: nodes, groups, leaders, lagging replicas, quorum",
		Args:  exactArgs(0),
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
			return g.print(v, func(w io.Writer) { printStatus(w, v) })
		},
	}
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
	Quorum    bool              `json:"quorum"`
}

type clusterView struct {
	ServedBy   string      `json:"served_by"`
	MetaLeader string      `json:"meta_leader"`
	MetaTerm   uint64      `json:"meta_term"`
	MapVersion uint64      `json:"shard_map_version"`
	AllQuorum  bool        `json:"all_groups_have_quorum"`
	Nodes      []nodeView  `json:"nodes"`
	Groups     []groupView `json:"groups"`
}

func statusView(resp *syncv1.ClusterStatusResponse) clusterView {
	v := clusterView{ServedBy: resp.GetServedBy(), MetaLeader: resp.GetLeaderId(), AllQuorum: true}
	suffrage := map[string]string{}
	health := map[string]string{}
	for _, n := range resp.GetNodes() {
		if n.GetNodeId() == resp.GetServedBy() {
			for _, m := range n.GetGossip() {
				health[m.GetNodeId()] = m.GetHealth()
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
				if r.node != gv.Leader && leader.GetCommitIndex() > r.st.GetAppliedIndex() {
					gv.Lag[r.node] = leader.GetCommitIndex() - r.st.GetAppliedIndex()
				} else if r.node != gv.Leader {
					gv.Lag[r.node] = 0
				}
			}
			gv.Quorum = inTerm > len(gv.Voters)/2
		}
		v.AllQuorum = v.AllQuorum && gv.Quorum
		v.Groups = append(v.Groups, gv)
	}
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].ID < v.Groups[j].ID })
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

func printStatus(w io.Writer, v clusterView) {
	meta := v.MetaLeader
	if meta == "" {
		meta = "none (election under way?)"
	}
	fmt.Fprintf(w, "meta leader %s (term %d), shard map v%d, %d nodes, %d groups (gossip as seen by %s)\n", meta, v.MetaTerm, v.MapVersion, len(v.Nodes), len(v.Groups), v.ServedBy)
	if v.AllQuorum {
		fmt.Fprintln(w, "quorum: every group has one")
	} else {
		var missing []string
		for _, g := range v.Groups {
			if !g.Quorum {
				missing = append(missing, fmt.Sprint(g.ID))
			}
		}
		fmt.Fprintf(w, "quorum: MISSING in group(s) %s\n", strings.Join(missing, ", "))
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
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tLEADER\tTERM\tVOTERS\tLAST INDEX\tFOLLOWER LAG\tQUORUM")
	for _, g := range v.Groups {
		leader := g.Leader
		if leader == "" {
			leader = "-"
		}
		var lag []string
		for _, id := range slices.Sorted(maps.Keys(g.Lag)) {
			lag = append(lag, fmt.Sprintf("%s:%d", id, g.Lag[id]))
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
