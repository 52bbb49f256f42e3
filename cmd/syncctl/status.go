package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: nodes, leader, term, commit and applied index",
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
			return g.print(statusView(resp), func(w io.Writer) { printStatus(w, statusView(resp)) })
		},
	}
}

type nodeView struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Suffrage     string `json:"suffrage"`
	RaftAddr     string `json:"raft_addr"`
	GRPCAddr     string `json:"grpc_addr"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastLogIndex uint64 `json:"last_log_index"`
	// Lag is how many entries the node's applied index is behind the
	// leader's commit index.
	Lag   uint64 `json:"lag"`
	Error string `json:"error,omitempty"`
}

type clusterView struct {
	Leader string     `json:"leader"`
	Term   uint64     `json:"term"`
	Nodes  []nodeView `json:"nodes"`
}

func statusView(resp *syncv1.ClusterStatusResponse) clusterView {
	v := clusterView{Leader: resp.GetLeaderId()}
	suffrage := map[string]string{}
	var leaderCommit uint64
	for _, n := range resp.GetNodes() {
		for _, m := range n.GetMembers() {
			suffrage[m.GetNodeId()] = m.GetSuffrage()
		}
		if n.GetNodeId() == resp.GetLeaderId() {
			leaderCommit, v.Term = n.GetCommitIndex(), n.GetTerm()
		}
	}
	for _, n := range resp.GetNodes() {
		nv := nodeView{
			ID: n.GetNodeId(), State: n.GetState(), Suffrage: suffrage[n.GetNodeId()],
			RaftAddr: n.GetRaftAddr(), GRPCAddr: n.GetGrpcAddr(), Term: n.GetTerm(),
			CommitIndex: n.GetCommitIndex(), AppliedIndex: n.GetAppliedIndex(), LastLogIndex: n.GetLastLogIndex(),
		}
		if leaderCommit > nv.AppliedIndex {
			nv.Lag = leaderCommit - nv.AppliedIndex
		}
		v.Nodes = append(v.Nodes, nv)
	}
	for id, e := range resp.GetUnreachable() {
		v.Nodes = append(v.Nodes, nodeView{ID: id, State: "unreachable", Suffrage: suffrage[id], Error: e})
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	return v
}

func printStatus(w io.Writer, v clusterView) {
	leader := v.Leader
	if leader == "" {
		leader = "none (election under way?)"
	}
	fmt.Fprintf(w, "leader %s, term %d, %d nodes\n\n", leader, v.Term, len(v.Nodes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tSUFFRAGE\tRAFT\tGRPC\tTERM\tCOMMIT\tAPPLIED\tLAST LOG\tLAG")
	for _, n := range v.Nodes {
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t\t(%s)\n", n.ID, n.State, n.Suffrage, n.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", n.ID, n.State, n.Suffrage, n.RaftAddr, n.GRPCAddr,
			n.Term, n.CommitIndex, n.AppliedIndex, n.LastLogIndex, n.Lag)
	}
	tw.Flush()
}
