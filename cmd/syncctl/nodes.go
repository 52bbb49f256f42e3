package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// defaultWaitTimeout bounds --wait.
const defaultWaitTimeout = 5 * time.Minute

// waitPoll is how often --wait looks at the cluster.
const waitPoll = 500 * time.Millisecond

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "List and remove nodes",
	}
	cmd.AddCommand(newNodeListCmd(g), newNodeRemoveCmd(g))
	return cmd
}

// clusterSnapshot is what the node and group listings are built from.
type clusterSnapshot struct {
	nodes  *syncv1.ListNodesResponse
	smap   *syncv1.ShardMapResponse
	status *syncv1.ClusterStatusResponse
}

func (g *globals) snapshot(ctx context.Context, cl *client.Client) (clusterSnapshot, error) {
	var s clusterSnapshot
	err := cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		if s.nodes, err = a.ListNodes(ctx, &syncv1.ListNodesRequest{}); err != nil {
			return err
		}
		if s.smap, err = a.ShardMap(ctx, &syncv1.ShardMapRequest{}); err != nil {
			return err
		}
		s.status, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
		return err
	})
	return s, err
}

type nodeListEntry struct {
	ID         string `json:"id"`
	State      string `json:"state"` // active, draining or removed
	Dead       bool   `json:"dead,omitempty"`
	StateSince string `json:"state_since,omitempty"`
	GRPCAddr   string `json:"grpc_addr"`
	RaftAddr   string `json:"raft_addr"`
	// Meta: the node's place in the meta group (voter, nonvoter, or "-"
	// when it is not a member).
	Meta string `json:"meta"`
	// Replicas: the groups the shard map places on the node; Hosts: the
	// groups it has a replica of now (voter or catching up); Leads: the
	// groups it leads.
	Replicas []uint64 `json:"replicas"`
	Hosts    []uint64 `json:"hosts"`
	Leads    []uint64 `json:"leads"`
	Error    string   `json:"error,omitempty"`
}

func nodeList(s clusterSnapshot) []nodeListEntry {
	meta := map[string]string{}
	byID := map[string]*syncv1.NodeStatusResponse{}
	for _, n := range s.status.GetNodes() {
		byID[n.GetNodeId()] = n
		if n.GetNodeId() == s.status.GetLeaderId() || len(meta) == 0 {
			for _, m := range n.GetMembers() {
				meta[m.GetNodeId()] = strings.ToLower(m.GetSuffrage())
			}
		}
	}
	var out []nodeListEntry
	for _, nd := range s.nodes.GetNodes() {
		e := nodeListEntry{
			ID: nd.GetNodeId(), State: nd.GetState(), Dead: nd.GetDead(), GRPCAddr: nd.GetGrpcAddr(), RaftAddr: nd.GetRaftAddr(),
			Meta: "-", Replicas: []uint64{}, Hosts: []uint64{}, Leads: []uint64{},
		}
		if ms := nd.GetStateSinceMs(); ms > 0 {
			e.StateSince = time.UnixMilli(ms).UTC().Format(time.RFC3339)
		}
		if m, ok := meta[e.ID]; ok {
			e.Meta = m
		}
		for _, grp := range s.smap.GetGroups() {
			if slices.Contains(grp.GetReplicas(), e.ID) {
				e.Replicas = append(e.Replicas, grp.GetId())
			}
		}
		if st, ok := byID[e.ID]; ok {
			for _, gs := range st.GetGroups() {
				e.Hosts = append(e.Hosts, gs.GetGroupId())
				if gs.GetState() == "Leader" {
					e.Leads = append(e.Leads, gs.GetGroupId())
				}
			}
		} else if msg, ok := s.status.GetUnreachable()[e.ID]; ok {
			e.Error = msg
		} else if e.State != "removed" {
			e.Error = "not in the meta group"
		}
		out = append(out, e)
	}
	return out
}

func groupIDs(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	var out []string
	for _, id := range ids {
		out = append(out, fmt.Sprint(id))
	}
	return strings.Join(out, ",")
}

func newNodeListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show every registered node: its state (active, draining, removed), replicas and the groups it leads",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s clusterSnapshot
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				s, err = g.snapshot(ctx, cl)
				return err
			})
			if err != nil {
				return err
			}
			v := struct {
				MetaLeader string          `json:"meta_leader"`
				MapVersion uint64          `json:"shard_map_version"`
				Nodes      []nodeListEntry `json:"nodes"`
			}{s.status.GetLeaderId(), s.smap.GetVersion(), nodeList(s)}
			return g.print(v, func(w io.Writer) {
				fmt.Fprintf(w, "meta leader %s, shard map v%d\n", v.MetaLeader, v.MapVersion)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tSTATE\tMETA\tGRPC\tREPLICAS (map)\tHOSTS\tLEADS\tNOTE")
				for _, e := range v.Nodes {
					state := e.State
					if e.Dead {
						state += " (dead)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, state, e.Meta, e.GRPCAddr, groupIDs(e.Replicas), groupIDs(e.Hosts), groupIDs(e.Leads), e.Error)
				}
				tw.Flush()
			})
		},
	}
}

func newNodeRemoveCmd(g *globals) *cobra.Command {
	var dead, wait bool
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Decommission a node: its replicas move to the other nodes, then it leaves the meta group and stops",
		Long: `Decommission a node. The node is marked draining; placement gives it
nothing, so each of its replicas is added elsewhere as a non-voter, caught
up, promoted, and then removed from it. Once no group holds it, the meta
leader marks it removed and takes it out of the meta group; the node stops
itself and refuses to start from its data dir again (wipe it to rejoin).

With --dead the node is gone for good: its replicas are rebuilt from the
others and nobody waits for it. Refused (FAILED_PRECONDITION, naming the
groups) when a group would lose its quorum or be left with one copy.

Safe to repeat; a meta leader failover resumes it.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.RemoveNodeResponse
			err := g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.RemoveNode(ctx, &syncv1.RemoveNodeRequest{NodeId: args[0], Dead: dead})
					return err
				})
			})
			if err != nil {
				return err
			}
			if !wait || resp.GetState() == "removed" {
				return g.print(resp, func(w io.Writer) { printRemove(w, args[0], resp) })
			}
			if !g.json {
				printRemove(g.out, args[0], resp)
			}
			last := ""
			err = g.waitFor(waitTimeout, func(ctx context.Context, cl *client.Client) (bool, error) {
				s, err := g.snapshot(ctx, cl)
				if err != nil {
					return false, err
				}
				for _, e := range nodeList(s) {
					if e.ID != args[0] {
						continue
					}
					line := fmt.Sprintf("%s: %s; the map places %d groups on it, it hosts %d, meta %s", e.ID, e.State, len(e.Replicas), len(e.Hosts), e.Meta)
					if e.State == "removed" && e.Meta == "-" {
						resp.State = e.State
						return true, nil
					}
					if line != last && !g.json {
						fmt.Fprintln(g.out, line)
					}
					last = line
				}
				return false, nil
			})
			if err != nil {
				return err
			}
			return g.print(resp, func(w io.Writer) { fmt.Fprintf(w, "%s removed: out of every group and of the meta group\n", args[0]) })
		},
	}
	cmd.Flags().BoolVar(&dead, "dead", false, "the node is gone for good: rebuild its replicas from the others")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the node is removed, printing progress")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", defaultWaitTimeout, "how long --wait waits")
	return cmd
}

func printRemove(w io.Writer, id string, resp *syncv1.RemoveNodeResponse) {
	what := "removal under way"
	if resp.GetDead() {
		what = "removal as dead under way: its replicas are rebuilt from the others"
	}
	switch {
	case resp.GetState() == "removed":
		fmt.Fprintf(w, "%s is removed\n", id)
	case resp.GetAlready():
		fmt.Fprintf(w, "%s is %s already (%s)\n", id, resp.GetState(), what)
	default:
		fmt.Fprintf(w, "%s is %s (%s)\n", id, resp.GetState(), what)
	}
}

// waitFor polls check every waitPoll until it says done, within timeout;
// each poll has --timeout.
func (g *globals) waitFor(timeout time.Duration, check func(context.Context, *client.Client) (bool, error)) error {
	cl, err := g.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(g.timeout, time.Until(deadline)))
		done, err := check(ctx, cl)
		cancel()
		if done {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().Add(waitPoll).After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("not done within %s (last error: %s)", timeout, describe(lastErr))
			}
			return fmt.Errorf("not done within %s", timeout)
		}
		time.Sleep(waitPoll)
	}
}
